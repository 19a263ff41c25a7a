/* common/rope_type.h — the RoPE scaling kinds, shared by the config reader
 * (model/hf_config.h) and the rope kernels (autograd/ops.h), as transformers'
 * modeling_rope_utils.py names them. */
#ifndef QT_COMMON_ROPE_TYPE_H
#define QT_COMMON_ROPE_TYPE_H

typedef enum {
  QT_ROPE_DEFAULT = 0, /* inv_freq = 1 / theta^(2j/D) (_compute_default_rope_parameters) */
  QT_ROPE_LINEAR,      /* default / factor (_compute_linear_scaling_rope_parameters) */
  QT_ROPE_LLAMA3       /* _compute_llama3_parameters: wavelength-banded scaling */
} qt_rope_type;

#endif
