#!/usr/bin/env python3
"""Write grpc_service.proto and model_config.proto (Triton's Open Inference Protocol v2 gRPC schema
and its model configuration) from the tritonclient wheel on PyPI.

The wheel does not ship the .proto texts; it ships them compiled, as serialized FileDescriptorProto
messages inside tritonclient/grpc/{service,model_config}_pb2.py. This script prints those
descriptors back as proto3 text (comments are not kept: they are not in a descriptor), so the
schema stopcald compiles at build time is exactly the one Triton's own clients speak.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install 'tritonclient[grpc]==2.40.0'
    /tmp/v/bin/python server/grpc/proto/regenerate.py server/grpc/proto
"""
import os
import sys

from google.protobuf import descriptor_pb2 as dp

F = dp.FieldDescriptorProto
SCALARS = {F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float", F.TYPE_INT64: "int64", F.TYPE_UINT64: "uint64",
           F.TYPE_INT32: "int32", F.TYPE_FIXED64: "fixed64", F.TYPE_FIXED32: "fixed32", F.TYPE_BOOL: "bool",
           F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32", F.TYPE_SFIXED32: "sfixed32",
           F.TYPE_SFIXED64: "sfixed64", F.TYPE_SINT32: "sint32", F.TYPE_SINT64: "sint64"}


def type_of(f):
    return SCALARS.get(f.type) or f.type_name  # messages and enums: the fully qualified ".pkg.Name"


def field_line(f, maps):
    if f.type == F.TYPE_MESSAGE and f.type_name in maps:
        k, v = maps[f.type_name]
        return "map<%s, %s> %s = %d;" % (type_of(k), type_of(v), f.name, f.number)
    label = "repeated " if f.label == F.LABEL_REPEATED else ("optional " if f.proto3_optional else "")
    opts = " [deprecated = true]" if f.options.deprecated else ""
    return "%s%s %s = %d%s;" % (label, type_of(f), f.name, f.number, opts)


def enum(e, ind, out):
    out.append("%senum %s {" % (ind, e.name))
    if e.options.allow_alias:
        out.append("%s  option allow_alias = true;" % ind)
    for v in e.value:
        out.append("%s  %s = %d;" % (ind, v.name, v.number))
    out.append("%s}" % ind)


def message(m, scope, ind, out):
    full = scope + "." + m.name
    maps = {full + "." + n.name: (n.field[0], n.field[1]) for n in m.nested_type if n.options.map_entry}
    out.append("%smessage %s {" % (ind, m.name))
    for e in m.enum_type:
        enum(e, ind + "  ", out)
    for n in m.nested_type:
        if not n.options.map_entry:
            message(n, full, ind + "  ", out)
    for r in m.reserved_range:
        out.append("%s  reserved %s;" % (ind, str(r.start) if r.end == r.start + 1 else "%d to %d" % (r.start, r.end - 1)))
    for name in m.reserved_name:
        out.append('%s  reserved "%s";' % (ind, name))
    done = set()
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            i = f.oneof_index
            if i in done:
                continue
            done.add(i)
            out.append("%s  oneof %s {" % (ind, m.oneof_decl[i].name))
            for g in m.field:
                if g.HasField("oneof_index") and g.oneof_index == i:
                    out.append("%s    %s" % (ind, field_line(g, maps)))
            out.append("%s  }" % ind)
        else:
            out.append("%s  %s" % (ind, field_line(f, maps)))
    out.append("%s}" % ind)


def proto_text(fd, source):
    out = ["// %s: Triton's schema as the tritonclient %s wheel (PyPI) carries it, printed back from" % (fd.name, source),
           "// its compiled descriptor by regenerate.py. BSD 3-clause, NVIDIA: see LICENSE here.",
           'syntax = "%s";' % (fd.syntax or "proto2"), "", "package %s;" % fd.package, ""]
    for d in fd.dependency:
        out.append('import "%s";' % d)
    if fd.dependency:
        out.append("")
    for e in fd.enum_type:
        enum(e, "", out)
        out.append("")
    for m in fd.message_type:
        message(m, "." + fd.package, "", out)
        out.append("")
    for s in fd.service:
        out.append("service %s {" % s.name)
        for r in s.method:
            out.append("  rpc %s(%s%s) returns (%s%s) {}" % (r.name, "stream " if r.client_streaming else "",
                                                           r.input_type, "stream " if r.server_streaming else "",
                                                           r.output_type))
        out.append("}")
        out.append("")
    return "\n".join(out)


def main():
    import tritonclient
    import tritonclient.grpc.model_config_pb2 as model_config
    import tritonclient.grpc.service_pb2 as service
    from importlib.metadata import version
    dest = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    src = version("tritonclient")
    for mod in (model_config, service):
        fd = dp.FileDescriptorProto()
        fd.ParseFromString(mod.DESCRIPTOR.serialized_pb)
        with open(os.path.join(dest, fd.name), "w") as f:
            f.write(proto_text(fd, src))
        print("wrote", os.path.join(dest, fd.name), "from", os.path.dirname(tritonclient.__file__))


if __name__ == "__main__":
    main()
