/* libFuzzer harness for the YAML config loader (train/config.c): libyaml plus
 * the typed-key layer. The first input byte picks how many of the trailing
 * NUL-separated strings are applied as --set overrides. Property: no crash,
 * no sanitizer report; a config that loads writes YAML that loads back to the
 * same struct. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int n_sets = data[0] % 4;
  data++;
  size--;
  /* the last n_sets NUL-terminated pieces are overrides */
  char *buf = malloc(size + 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  const char *sets[3];
  size_t yaml_len = size;
  int got = 0;
  for (int i = 0; i < n_sets; i++) {
    char *z = memchr(buf, '\0', yaml_len);
    if (!z) break;
    sets[got++] = z + 1;
    yaml_len = (size_t)(z - buf);
  }
  qt_config a, b;
  if (qt_config_load_string(buf, yaml_len, "fuzz.yaml", sets, got, &a) == QT_OK) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
      qt_config_write_yaml(&a, f);
      fclose(f);
      if (qt_config_load_string(text, len, "roundtrip.yaml", NULL, 0, &b) != QT_OK || memcmp(&a, &b, sizeof a) != 0)
        abort(); /* the writer produced something the reader reads differently */
      free(text);
    }
  }
  free(buf);
  return 0;
}
