# Turns the page (index.html) into a C array at build time, so stopcald serves it from memory
# with no file to install: cmake -DIN=index.html -DOUT=page_html.c -P embed.cmake
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "/* Generated from server/page/index.html by server/page/embed.cmake. */\n"
  "const char *api_page_html(void);\n"
  "static const char page[] = {${bytes} 0x00};\n"
  "const char *api_page_html(void) { return page; }\n")
