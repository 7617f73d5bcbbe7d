# Registers every `def test_<case>(ctx)` of a Python test file (tests/reference/stopcal_harness.py
# runner) as its own ctest test <prefix>.<case>, so failures are named and cases run in parallel.
# The cases are read from the source, not by running Python, so configuring needs no interpreter.
function(stopcal_add_python_cases prefix script label)
  set(options NEEDS_INFER)
  cmake_parse_arguments(ARG "${options}" "" "ENV" ${ARGN}) # ENV: more VAR=value for every case
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${script})
  file(STRINGS ${script} defs REGEX "^def test_[A-Za-z0-9_]+\\(ctx\\):")
  set(args)
  if(ARG_NEEDS_INFER)
    set(args --infer $<TARGET_FILE:stopcal-infer>)
  endif()
  foreach(def IN LISTS defs)
    string(REGEX REPLACE "^def test_([A-Za-z0-9_]+)\\(ctx\\):.*" "\\1" case "${def}")
    add_test(NAME ${prefix}.${case} COMMAND ${STOPCAL_PYTHON} ${script} ${args} --case ${case})
    # No __pycache__ in the source tree.
    set_tests_properties(${prefix}.${case} PROPERTIES LABELS "${label}" TIMEOUT 300
      ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1;${ARG_ENV}")
  endforeach()
endfunction()
