/* quant/quant_bnb.c — finds the tensors of one bitsandbytes 4-bit Linear in a
 * safetensors model (formats.md section 2). Kept apart from quant_weight.c so
 * that code which never opens a model does not link the safetensors reader. */
#include <stdio.h>

#include "quant/quant.h"

qt_status qt_quant_weight_load_bnb(const qt_st_model *m, const char *prefix,
                                   qt_quant_weight *out) {
  static const char *const suffix[] = {".weight", ".weight.absmax", ".weight.quant_map",
                                       ".weight.nested_absmax", ".weight.nested_quant_map",
                                       ".weight.quant_state.bitsandbytes__nf4",
                                       ".weight.quant_state.bitsandbytes__fp4"};
  const qt_st_entry *e[7];
  char name[1024];
  for (int i = 0; i < 7; i++) {
    if ((size_t)snprintf(name, sizeof(name), "%s%s", prefix, suffix[i]) >= sizeof(name))
      return qt_fail(QT_ERR_INVALID, "%s: tensor name too long", prefix);
    e[i] = qt_st_model_find(m, name);
  }
  const qt_st_entry *qs = e[5] ? e[5] : e[6];
  return qt_quant_weight_from_bnb(prefix, e[0], e[1], e[2], e[3], e[4], qs, out);
}
