/* st_verdict FILE...: prints one line per file, "OK <n> tensors" or
 * "<status name> | <message>", for tools/reference/check_c_writer.py
 * --reader-diff (differential test of the C reader against the reference
 * reader). Not a test by itself. */
#include <stdio.h>

#include "common/safetensors.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    qt_st_file f;
    qt_status s = qt_st_open(argv[i], &f);
    if (s == QT_OK) {
      printf("OK %zu tensors\n", f.n_tensors);
      qt_st_close(&f);
    } else {
      /* one line: the message may hold a newline only via a tensor name, which st_show escapes */
      printf("%s | %s\n", qt_status_name(s), qt_error_message());
    }
  }
  return 0;
}
