# cmake -DIN=file -DOUT=file.c -DSYMBOL=name -P embed_file.cmake: the bytes of IN as a C array
# `const unsigned char SYMBOL_bytes[]` and `const size_t SYMBOL_size` (no terminating NUL counted),
# so the C side compiles in exactly the bytes the Python side reads.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR size "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" body "${body}")
file(WRITE ${OUT}.tmp "/* Generated at build time from ${IN} by models/embed_file.cmake: do not edit. */\n#include <stddef.h>\nconst unsigned char ${SYMBOL}_bytes[] = {\n${body}0x00};\nconst size_t ${SYMBOL}_size = ${size};\n")
file(RENAME ${OUT}.tmp ${OUT})
