#!/usr/bin/env python3
"""Simulated LOFAR self-calibration cycles, for training and showing the demo stop/continue model.

The physics, in brief (numpy only):

- Array: a LOFAR-like Dutch array in local east/north coordinates: 6 superterp stations on a
  ~150 m ring, 18 core stations within ~2 km and 14 remote stations out to ~45 km on a loose spiral.
  Station positions are fixed by ARRAY_SEED; the same array observes every field.
- Observation: an earth-rotation synthesis track (4 to 8 h around transit) of a field at
  declination 30°–70° from latitude 52.9° N, 48 time steps, 3 channels between 120 and 168 MHz.
  uvw from the standard (H, δ) rotation; baselines longer than UV_MAX (40 kλ) are dropped.
- Sky: a bright compact "calibrator" near the centre (the source that self-calibration works on;
  point, slightly resolved or a double; 500–8000 × the noise, which is 50–300 µJy/beam), a
  power-law population of faint point sources and a few extended Gaussian components (elongated
  blobs, sometimes a double-lobed radio galaxy).
  Visibilities are predicted by direct Fourier transform (exact, no gridding) with the analytic
  transform of each Gaussian.
- Errors: antenna-based complex gains g_s(t) = exp(a·η_s(t) + i·φ·w_s·ξ_s(t)): ξ and η are smooth
  unit-variance random processes in time (a few-step correlation), w_s grows with distance from
  the core (the ionosphere differs more between distant stations) and is normalised to rms 1, so φ
  is the phase-error rms over stations and times; the amplitude error a = 0.25·φ[rad]. The
  corrupted data are V'_ij = g_i conj(g_j) V_ij + thermal noise.
- Imaging: visibilities are gridded (nearest cell) on a 512² grid with Briggs robust −0.5
  weighting and Fourier transformed; the central 256² pixels at 2"/pixel are kept. The PSF's main
  lobe is fitted with a Gaussian, which gives the restoring beam (BMAJ, BMIN, BPA).
- Deconvolution, idealised: CLEAN is taken to find every component brighter than 5σ scaled by the
  gains' coherent factor c = Re<g_i conj(g_j)> (phase errors decorrelate flux); the restored image
  is that model convolved with the restoring beam plus the residual image, the dirty image of
  V' − c·V_model, which holds the thermal noise, the faint sources and the calibration artefacts
  (stripes and rings around the bright source). This is a perfect CLEAN with the error left in the
  residual, which is where real self-calibration images keep it.
- Self-calibration sequence: cycles k = 0…5 of one field share its sky and its thermal noise
  realisation (the data do not change between cycles; only the solutions do); the phase rms
  shrinks φ_k = φ_floor + (φ_0 − φ_floor)·r^k (r = 0.15–0.45) and the error pattern partly renews
  every cycle. φ_0 and φ_floor are drawn in terms of the artefacts they cause: the first cycle's
  artefacts peak at 20–1000 σ (φ_0 ≤ 70°), the floor's at 0.3–3 σ, the level at which solutions
  become limited by the calibrator's signal-to-noise, so a bright calibrator converges to a smaller
  phase error than a faint one, as in real self-calibration.
- Label: the artefact image E (the noiseless dirty image of g_i conj(g_j)·V − c·V for the CLEANed
  components) is what calibration errors add to the image. "stop" (0) when |E| < 5σ
  (LABEL_PEAK_SIGMA) everywhere outside real emission (where the restored model is below 5σ): no
  artefact would be found by a source finder at that level, and further cycles cannot improve
  what can be seen; "continue" (1) otherwise. The phase rms φ, the artefact peak (outside
  emission, and anywhere) and the artefact rms are recorded too.

Images are written as float32 FITS (BITPIX −32) with a 4-D LOFAR/WSClean-style header.

    python3 models/demo/simulate.py --out DIR [--fields 4] [--seed 0] [--png]
writes DIR/*.fits and DIR/labels.csv (and PNG previews with --png).
"""

import argparse
import csv
import math
import os

import numpy as np

ARRAY_SEED = 20240601
LATITUDE_DEG = 52.915          # LOFAR core
PIXEL_ARCSEC = 2.0
IMAGE_SIZE = 256               # pixels kept (FITS image side)
GRID_SIZE = 512                # FFT grid (twice the image, against aliasing of sidelobes)
N_TIMES = 48
FREQS_HZ = (1.26e8, 1.44e8, 1.62e8)
UV_MAX = 40e3                  # wavelengths
ROBUST = -0.5
N_CYCLES = 6
CLEAN_SIGMA = 5.0              # components brighter than this (× noise) are in the CLEAN model
LABEL_PEAK_SIGMA = 5.0         # stop when the artefact peak is below this many σ
ARTEFACT_GAIN = 0.34           # artefact peak / σ per (DR · phase rms in rad), measured here
C_LIGHT = 299792458.0
ARCSEC = math.pi / 180.0 / 3600.0


# --------------------------------------------------------------------------------------------
# the array


def lofar_like_layout(seed=ARRAY_SEED):
    """Station positions (east, north) in metres: superterp, core and remote stations."""
    rng = np.random.default_rng(seed)
    pos = []
    ang0 = rng.uniform(0, 2 * np.pi)
    for k in range(6):  # the superterp: a ring of ~300 m diameter
        a = ang0 + 2 * np.pi * k / 6
        pos.append((150.0 * np.cos(a), 150.0 * np.sin(a)))
    for _ in range(18):  # core stations, denser towards the centre
        r = 10 ** rng.uniform(np.log10(350.0), np.log10(2000.0))
        a = rng.uniform(0, 2 * np.pi)
        pos.append((r * np.cos(a), r * np.sin(a)))
    radii = np.geomspace(3.5e3, 45e3, 14)
    for k, r in enumerate(radii):  # remote stations on a loose spiral
        a = 2.4 * k + rng.normal(0, 0.3)
        r *= rng.uniform(0.85, 1.15)
        pos.append((r * np.cos(a), r * np.sin(a)))
    return np.array(pos)


def uvw_tracks(enu, dec_deg, hours, n_times=N_TIMES, lat_deg=LATITUDE_DEG):
    """Per-station (u, v) in metres at each hour angle (shape (n_times, n_stations, 2)).

    ENU → equatorial XYZ at latitude φ (U = 0): X = −N sinφ, Y = E, Z = N cosφ; then
    u = sinH·X + cosH·Y, v = −sinδ cosH·X + sinδ sinH·Y + cosδ·Z (Thompson, Moran & Swenson)."""
    lat, dec = np.radians(lat_deg), np.radians(dec_deg)
    E, N = enu[:, 0], enu[:, 1]
    X, Y, Z = -N * np.sin(lat), E, N * np.cos(lat)
    H = np.radians(15.0 * np.linspace(-hours / 2, hours / 2, n_times))[:, None]
    u = np.sin(H) * X + np.cos(H) * Y
    v = -np.sin(dec) * np.cos(H) * X + np.sin(dec) * np.sin(H) * Y + np.cos(dec) * Z
    return np.stack([u, v], axis=-1)


class Observation:
    """uv coverage of one track: baseline/time/channel samples, their grid cells and weights."""

    def __init__(self, enu, dec_deg, hours):
        self.enu = enu
        ns = len(enu)
        st = uvw_tracks(enu, dec_deg, hours)                      # (T, S, 2) metres
        i, j = np.triu_indices(ns, k=1)
        uv_m = st[:, i, :] - st[:, j, :]                          # (T, B, 2)
        lam = C_LIGHT / np.array(FREQS_HZ)
        uv = uv_m[None, :, :, :] / lam[:, None, None, None]       # (C, T, B, 2) wavelengths
        T = st.shape[0]
        ant1 = np.broadcast_to(i[None, None, :], uv.shape[:3])
        ant2 = np.broadcast_to(j[None, None, :], uv.shape[:3])
        tidx = np.broadcast_to(np.arange(T)[None, :, None], uv.shape[:3])
        keep = np.hypot(uv[..., 0], uv[..., 1]) <= UV_MAX
        self.u = uv[..., 0][keep]
        self.v = uv[..., 1][keep]
        self.ant1 = ant1[keep]
        self.ant2 = ant2[keep]
        self.t = tidx[keep]
        self.n_stations, self.n_times = ns, T
        # grid cells, for the sample and its Hermitian conjugate (see dirty_image for the signs)
        N = GRID_SIZE
        du = 1.0 / (N * PIXEL_ARCSEC * ARCSEC)
        ku = np.rint(self.u / du).astype(np.int64)
        kv = np.rint(self.v / du).astype(np.int64)
        self.cell = ((kv % N) * N + (-ku % N))
        self.cell_conj = ((-kv % N) * N + (ku % N))
        # Briggs weighting on the gridded sampling density
        density = (np.bincount(self.cell, minlength=N * N)
                   + np.bincount(self.cell_conj, minlength=N * N)).astype(np.float64)
        f2 = (5.0 * 10 ** (-ROBUST)) ** 2 / (np.sum(density ** 2) / np.sum(density))
        w = 1.0 / (1.0 + density * f2)
        self.weight = w[self.cell]
        self.wsum = 2.0 * np.sum(self.weight)
        self.psf = self.dirty_image(np.ones_like(self.u, dtype=np.complex128))
        self.beam = fit_beam(self.psf)

    def dirty_image(self, vis):
        """Dirty image (GRID_SIZE², Jy/beam: the PSF peaks at 1) of visibilities ``vis``.

        Pixel (y, x) is at l = −(x − c)·Δ (RA grows to the left, CDELT1 < 0), m = (y − c)·Δ, and
        I(l, m) = Σ w·V·exp(+2πi(ul + vm)) / Σ w over the samples and their conjugates, so a
        sample at (u, v) goes to grid cell (kv, −ku) of numpy's inverse FFT."""
        N = GRID_SIZE
        wv = self.weight * vis
        g = (np.bincount(self.cell, wv.real, N * N) + 1j * np.bincount(self.cell, wv.imag, N * N)
             + np.bincount(self.cell_conj, wv.real, N * N)
             - 1j * np.bincount(self.cell_conj, wv.imag, N * N))
        img = np.fft.ifft2(g.reshape(N, N)).real * (N * N) / self.wsum
        return np.fft.fftshift(img)

    def crop(self, img):
        a = (GRID_SIZE - IMAGE_SIZE) // 2
        return img[a:a + IMAGE_SIZE, a:a + IMAGE_SIZE]


def fit_beam(psf):
    """Gaussian fit of the PSF's main lobe: (bmaj, bmin) in pixels (FWHM) and bpa in degrees
    (east of north). Least squares on log(psf) over the connected region above half maximum."""
    c = psf.shape[0] // 2
    r = 12
    sub = psf[c - r:c + r + 1, c - r:c + r + 1]
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    sel = (sub > 0.5) & (np.hypot(xx, yy) < r)
    x, y, z = xx[sel].astype(float), yy[sel].astype(float), np.log(sub[sel])
    # log psf = −(a x² + 2b xy + c y²)
    A = np.stack([x * x, 2 * x * y, y * y], axis=1)
    coef, *_ = np.linalg.lstsq(A, -z, rcond=None)
    M = np.array([[coef[0], coef[1]], [coef[1], coef[2]]])
    evals, evecs = np.linalg.eigh(M)
    evals = np.maximum(evals, 1e-6)
    sig = 1.0 / np.sqrt(2.0 * evals)           # sigmas along the eigenvectors (largest first below)
    k = np.argmax(sig)
    fwhm = 2.0 * np.sqrt(2.0 * np.log(2.0))
    bmaj, bmin = fwhm * sig[k], fwhm * sig[1 - k]
    ex, ey = evecs[:, k]                        # major axis in (x, y) pixels
    # sky: east = −x (RA grows left), north = +y; position angle from north through east
    bpa = np.degrees(np.arctan2(-ex, ey)) % 180.0
    return float(bmaj), float(bmin), float(bpa)


# --------------------------------------------------------------------------------------------
# the sky


def random_sky(rng, sigma):
    """Components of a field as rows (x, y, flux_Jy, major_fwhm_px, minor_fwhm_px, pa_rad),
    x/y pixel offsets from the image centre (x to the right = west, y up = north), and the
    calibrator's total flux."""
    comps = []
    half = IMAGE_SIZE / 2
    dr = 10 ** rng.uniform(np.log10(500.0), np.log10(8000.0))   # calibrator flux / noise
    s_cal = dr * sigma
    cx, cy = rng.uniform(-25, 25, 2)
    kind = rng.random()
    if kind < 0.5:        # unresolved
        comps.append((cx, cy, s_cal, 0.0, 0.0, 0.0))
    elif kind < 0.8:      # slightly resolved
        comps.append((cx, cy, s_cal, rng.uniform(1.0, 4.0), rng.uniform(0.5, 1.5),
                       rng.uniform(0, np.pi)))
    else:                 # a compact double
        sep, pa, frac = rng.uniform(4, 15), rng.uniform(0, np.pi), rng.uniform(0.3, 0.7)
        dx, dy = 0.5 * sep * np.cos(pa), 0.5 * sep * np.sin(pa)
        comps.append((cx + dx, cy + dy, s_cal * frac, 0.0, 0.0, 0.0))
        comps.append((cx - dx, cy - dy, s_cal * (1 - frac), 1.5, 1.0, pa))
    # faint point sources, dN/dS ∝ S^-1.8 from 2σ up
    n = rng.poisson(20)
    s = 2.0 * sigma * (1.0 - rng.random(n)) ** (-1.0 / 0.8)
    s = np.minimum(s, 0.2 * s_cal)
    for f in s:
        x, y = rng.uniform(-half + 8, half - 8, 2)
        comps.append((x, y, f, 0.0, 0.0, 0.0))
    # extended emission
    for _ in range(rng.integers(0, 4)):
        x, y = rng.uniform(-half + 30, half - 30, 2)
        maj = rng.uniform(6, 30)
        comps.append((x, y, sigma * rng.uniform(20, 300) * maj / 3, maj,
                      maj * rng.uniform(0.3, 0.9), rng.uniform(0, np.pi)))
    if rng.random() < 0.3:  # a double-lobed radio galaxy
        x, y = rng.uniform(-half + 50, half - 50, 2)
        pa, sep = rng.uniform(0, np.pi), rng.uniform(20, 60)
        f = sigma * rng.uniform(200, 2000)
        dx, dy = 0.5 * sep * np.cos(pa), 0.5 * sep * np.sin(pa)
        comps.append((x, y, 0.05 * f, 0.0, 0.0, 0.0))
        for sgn in (1, -1):
            comps.append((x + sgn * dx, y + sgn * dy, 0.5 * f * rng.uniform(0.6, 1.4),
                          rng.uniform(5, 12), rng.uniform(3, 6), pa + rng.normal(0, 0.3)))
    return np.array(comps, dtype=np.float64), s_cal


def predict(obs, comps, chunk=8):
    """Model visibilities by direct Fourier transform, V = Σ S·G(u, v)·exp(−2πi(ul + vm))."""
    d = PIXEL_ARCSEC * ARCSEC
    vis = np.zeros(obs.u.shape, dtype=np.complex128)
    for a in range(0, len(comps), chunk):
        c = comps[a:a + chunk]
        l = (-c[:, 0] * d)[:, None]
        m = (c[:, 1] * d)[:, None]
        ph = np.exp(-2j * np.pi * (obs.u[None, :] * l + obs.v[None, :] * m))
        amp = c[:, 2][:, None] * np.ones_like(obs.u)[None, :]
        ext = c[:, 3] > 0
        if ext.any():
            # Gaussian of FWHM (maj, min) with the major axis at angle pa from +x in pixels.
            k = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
            smaj, smin, pa = c[ext, 3] * k * d, c[ext, 4] * k * d, c[ext, 5]
            # axis directions in (l, m): x → −l, y → m
            ca, sa = np.cos(pa), np.sin(pa)
            u_maj = obs.u[None, :] * (-ca[:, None]) + obs.v[None, :] * sa[:, None]
            u_min = obs.u[None, :] * (sa[:, None]) + obs.v[None, :] * ca[:, None]
            amp[ext] *= np.exp(-2 * np.pi ** 2 * ((smaj[:, None] * u_maj) ** 2
                                                   + (smin[:, None] * u_min) ** 2))
        vis += np.sum(amp * ph, axis=0)
    return vis


def restored_model(comps, beam, size=IMAGE_SIZE):
    """The components convolved with the restoring beam, in Jy/beam (size² image)."""
    bmaj, bmin, bpa = beam
    k = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    c = size / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size))
    pa_beam = np.radians(bpa)
    # beam major axis direction in (x, y): PA from north (+y) through east (−x)
    bdir = np.array([-np.sin(pa_beam), np.cos(pa_beam)])
    Cb = (k * bmaj) ** 2 * np.outer(bdir, bdir) + (k * bmin) ** 2 * np.outer(
        [bdir[1], -bdir[0]], [bdir[1], -bdir[0]])
    area_b = 2 * np.pi * np.sqrt(np.linalg.det(Cb))  # beam area in pixels
    for x, y, f, maj, mnr, pa in comps:
        cov = Cb.copy()
        if maj > 0:
            sdir = np.array([np.cos(pa), np.sin(pa)])
            cov = cov + (k * maj) ** 2 * np.outer(sdir, sdir) + (k * mnr) ** 2 * np.outer(
                [sdir[1], -sdir[0]], [sdir[1], -sdir[0]])
        inv = np.linalg.inv(cov)
        area = 2 * np.pi * np.sqrt(np.linalg.det(cov))
        r = int(min(size, 5 * np.sqrt(np.max(np.linalg.eigvalsh(cov))) + 3))
        x0, y0 = c + x, c + y
        ya, yb = max(0, int(y0) - r), min(size, int(y0) + r + 1)
        xa, xb = max(0, int(x0) - r), min(size, int(x0) + r + 1)
        if ya >= yb or xa >= xb:
            continue
        dx, dy = xx[ya:yb, xa:xb] - x0, yy[ya:yb, xa:xb] - y0
        q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
        img[ya:yb, xa:xb] += f * area_b / area * np.exp(-0.5 * q)
    return img


# --------------------------------------------------------------------------------------------
# calibration errors


def smooth_series(rng, shape, corr):
    """Unit-variance random series along the last axis, Gaussian-correlated over ``corr`` steps."""
    n = shape[-1]
    white = rng.standard_normal(shape[:-1] + (n + 6 * corr,))
    t = np.arange(-3 * corr, 3 * corr + 1)
    ker = np.exp(-0.5 * (t / corr) ** 2)
    ker /= np.sqrt(np.sum(ker ** 2))
    out = np.apply_along_axis(lambda s: np.convolve(s, ker, mode="valid"), -1, white)
    return out[..., :n]


def station_weights(enu):
    """Relative phase-error scale per station: grows with distance from the core, rms 1."""
    d = np.hypot(enu[:, 0], enu[:, 1])
    w = (1.0 + d / 3000.0) ** 0.5
    return w / np.sqrt(np.mean(w ** 2))


def gains(xi, eta, w, phi_rad):
    """Complex gains (stations, times) for unit-variance patterns ξ (phase) and η (amplitude)."""
    ph = phi_rad * w[:, None] * xi
    amp = 0.25 * phi_rad * eta
    return np.exp(amp + 1j * ph)


# --------------------------------------------------------------------------------------------
# one field, its self-calibration cycles


def simulate_field(seed):
    """Simulate one field through N_CYCLES self-calibration cycles.

    Returns a list of dicts: image (float32, IMAGE_SIZE², Jy/beam, row = y = north up),
    beam, label (0 stop / 1 continue), phase_rms_deg, artefact_peak_sigma, artefact_rms_sigma,
    cycle, sigma, dec, freq."""
    rng = np.random.default_rng(seed)
    enu = lofar_like_layout()
    dec = float(rng.uniform(30, 70))
    hours = float(rng.uniform(4, 8))
    obs = Observation(enu, dec, hours)
    sigma = float(10 ** rng.uniform(np.log10(5e-5), np.log10(3e-4)))   # Jy/beam
    comps, s_cal = random_sky(rng, sigma)
    bright = comps[:, 2] > CLEAN_SIGMA * sigma
    v_bright = predict(obs, comps[bright])
    v_faint = predict(obs, comps[~bright]) if (~bright).any() else np.zeros_like(v_bright)
    model_img = restored_model(comps[bright], obs.beam)
    # thermal noise: one realisation for the whole sequence, scaled to σ in the image
    nvis = rng.standard_normal(obs.u.shape) + 1j * rng.standard_normal(obs.u.shape)
    noise_img = obs.crop(obs.dirty_image(nvis))
    noise_img *= sigma / np.std(noise_img)
    # The error sequence. The artefact peak grows as ~ARTEFACT_GAIN·DR·φ[rad] (DR = calibrator
    # peak / noise, measured on this simulator), so the sequence is drawn in artefact terms:
    # a first-cycle level of 20–1000 σ (φ capped at 70°) shrinking by a factor r per cycle to
    # a floor of 0.3–3 σ, the level where the solutions become limited by the calibrator's S/N.
    to_phi = 1.0 / (ARTEFACT_GAIN * s_cal / sigma)
    phi0 = min(np.radians(70.0), 10 ** rng.uniform(np.log10(20.0), np.log10(1000.0)) * to_phi)
    ratio = rng.uniform(0.15, 0.45)
    floor = min(phi0, 10 ** rng.uniform(np.log10(0.3), np.log10(3.0)) * to_phi)
    w = station_weights(enu)
    shape = (obs.n_stations, obs.n_times)
    corr = int(rng.integers(2, 6))
    xi = smooth_series(rng, shape, corr)
    eta = smooth_series(rng, shape, corr)
    out = []
    for k in range(N_CYCLES):
        if k:  # the next cycle's solutions leave a partly new error pattern
            rho = 0.5
            xi = rho * xi + np.sqrt(1 - rho ** 2) * smooth_series(rng, shape, corr)
            eta = rho * eta + np.sqrt(1 - rho ** 2) * smooth_series(rng, shape, corr)
        phi = floor + (phi0 - floor) * ratio ** k
        g = gains(xi, eta, w, phi)
        gij = g[obs.ant1, obs.t] * np.conj(g[obs.ant2, obs.t])
        coh = float(np.mean(gij.real))
        err_img = obs.crop(obs.dirty_image(gij * v_bright - coh * v_bright))
        faint_img = obs.crop(obs.dirty_image(gij * v_faint))
        image = coh * model_img + err_img + faint_img + noise_img
        # Artefacts count where there is no real emission above the same level: on top of the
        # bright source (seen through a log stretch) they are part of its image, away from it
        # they are spurious sources and structure.
        empty = coh * model_img < LABEL_PEAK_SIGMA * sigma
        peak = float(np.max(np.abs(err_img[empty])) / sigma)
        peak_all = float(np.max(np.abs(err_img)) / sigma)
        out.append(dict(image=image.astype(np.float32), beam=obs.beam, cycle=k,
                        phase_rms_deg=float(np.degrees(phi)),
                        artefact_peak_sigma=peak, artefact_peak_all_sigma=peak_all,
                        artefact_rms_sigma=float(np.std(err_img) / sigma),
                        label=int(peak >= LABEL_PEAK_SIGMA), sigma=sigma, dec=dec,
                        hours=hours, seed=seed))
    return out


# --------------------------------------------------------------------------------------------
# FITS


def fits_header(meta, name):
    """A 4-D LOFAR/WSClean-style primary header for an IMAGE_SIZE² image."""
    from astropy.io import fits
    n = IMAGE_SIZE
    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = -32
    hdr["NAXIS"] = 4
    hdr["NAXIS1"] = n
    hdr["NAXIS2"] = n
    hdr["NAXIS3"] = 1
    hdr["NAXIS4"] = 1
    hdr["EXTEND"] = True
    bmaj, bmin, bpa = meta["beam"]
    hdr["BSCALE"] = 1.0
    hdr["BZERO"] = 0.0
    hdr["BUNIT"] = "JY/BEAM"
    hdr["BMAJ"] = (bmaj * PIXEL_ARCSEC / 3600.0, "restoring beam major axis FWHM (deg)")
    hdr["BMIN"] = (bmin * PIXEL_ARCSEC / 3600.0, "restoring beam minor axis FWHM (deg)")
    hdr["BPA"] = (bpa, "restoring beam position angle (deg)")
    hdr["EQUINOX"] = 2000.0
    hdr["BTYPE"] = "Intensity"
    hdr["TELESCOP"] = "LOFAR"
    hdr["OBSERVER"] = "stopcal simulator"
    hdr["OBJECT"] = name[:68]
    hdr["CTYPE1"] = "RA---SIN"
    hdr["CRPIX1"] = n / 2 + 1
    hdr["CRVAL1"] = 180.0
    hdr["CDELT1"] = -PIXEL_ARCSEC / 3600.0
    hdr["CUNIT1"] = "deg"
    hdr["CTYPE2"] = "DEC--SIN"
    hdr["CRPIX2"] = n / 2 + 1
    hdr["CRVAL2"] = round(meta["dec"], 6)
    hdr["CDELT2"] = PIXEL_ARCSEC / 3600.0
    hdr["CUNIT2"] = "deg"
    hdr["CTYPE3"] = "FREQ"
    hdr["CRPIX3"] = 1.0
    hdr["CRVAL3"] = float(np.mean(FREQS_HZ))
    hdr["CDELT3"] = float(FREQS_HZ[-1] - FREQS_HZ[0] + 1.2e7)
    hdr["CUNIT3"] = "Hz"
    hdr["CTYPE4"] = "STOKES"
    hdr["CRPIX4"] = 1.0
    hdr["CRVAL4"] = 1.0
    hdr["CDELT4"] = 1.0
    hdr["CUNIT4"] = ""
    hdr["SPECSYS"] = "TOPOCENT"
    hdr["RESTFRQ"] = float(np.mean(FREQS_HZ))
    hdr["ORIGIN"] = "stopcal models/demo/simulate.py"
    hdr["SELFCYC"] = (meta["cycle"], "simulated self-calibration cycle")
    hdr["PHASERMS"] = (round(meta["phase_rms_deg"], 4), "residual phase error rms (deg)")
    hdr["ARTPEAK"] = (round(meta["artefact_peak_sigma"], 4), "artefact peak / noise")
    hdr["SIMNOISE"] = (float(np.float32(meta["sigma"])), "thermal noise (Jy/beam)")
    hdr["SIMSEED"] = (int(meta["seed"]), "simulator field seed")
    hdr["HISTORY"] = "Simulated LOFAR HBA self-calibration image (a demonstration, not science)."
    return hdr


def write_fits(path, meta, name):
    """Write meta['image'] as a float32 4-D FITS file; returns the path."""
    from astropy.io import fits
    data = np.asarray(meta["image"], dtype=">f4")[None, None, :, :]
    hdu = fits.PrimaryHDU(data=data, header=fits_header(meta, name))
    hdu.writeto(path, overwrite=True, output_verify="exception")
    return path


def save_png(path, image, title):
    """A quick look: the image under a symmetric-log stretch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm
    rms = np.std(image[np.abs(image) < 5 * np.median(np.abs(image)) / 0.6745])
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.imshow(image, origin="lower", cmap="gray",
              norm=SymLogNorm(linthresh=2 * rms, linscale=2, vmin=-rms, vmax=50000 * rms))
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--fields", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", action="store_true")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for f in range(args.fields):
        seed = args.seed * 100003 + f
        for meta in simulate_field(seed):
            name = f"field{f:04d}_cycle{meta['cycle']}_{'continue' if meta['label'] else 'stop'}"
            write_fits(os.path.join(args.out, name + ".fits"), meta, name)
            if args.png:
                save_png(os.path.join(args.out, name + ".png"), meta["image"],
                         f"{name} φ={meta['phase_rms_deg']:.1f}° "
                         f"peak={meta['artefact_peak_sigma']:.1f}σ")
            rows.append([name, meta["label"], f"{meta['phase_rms_deg']:.3f}",
                         f"{meta['artefact_peak_sigma']:.3f}", f"{meta['artefact_rms_sigma']:.4f}"])
    with open(os.path.join(args.out, "labels.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "label", "phase_rms_deg", "artefact_peak_sigma", "artefact_rms_sigma"])
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
