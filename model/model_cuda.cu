/* model/model_cuda.cu — the decoder's forward + backward (or forward alone)
 * with LoRA on the GPU, op by op (model_cuda.h documents the contract; model.c
 * decoder_layer is the CPU recording this mirrors). No kernels of its own: every op is a call of
 * autograd/ops_cuda.h (bf16 storage, fp32 arithmetic) on the default stream
 * (activation offloading's copies run on a second one: see offload_save).
 * qt_model_cuda_init uploads the weights and allocates every buffer once;
 * qt_model_cuda_forward_backward only copies the batch and the LoRA in and the
 * gradients out. */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops_cuda.h"
#include "common/cuda_check.h"
extern "C" {
#include "common/half.h"
}
#include "model/model_cuda.h"

/* acc (n) += g (n) widened from bf16: a micro-batch's LoRA gradient into the
 * step's fp32 accumulator on the device. */
__global__ void acc_bf16_kernel(float *acc, const uint16_t *g, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) acc[i] += __uint_as_float((uint32_t)g[i] << 16);
}

/* dst (n) = bf16(src), round to nearest even (NaN kept a quiet NaN), as common/half.h. */
__global__ void round_bf16_kernel(uint16_t *dst, const float *src, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t u = __float_as_uint(src[i]);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    dst[i] = QT_HALF_CANONICAL_NAN;
    return;
  }
  u += 0x7FFFu + ((u >> 16) & 1u);
  dst[i] = (uint16_t)(u >> 16);
}

namespace {

qt_status acc_bf16(float *acc, const uint16_t *g, int64_t n) {
  if (n <= 0) return QT_OK;
  acc_bf16_kernel<<<(unsigned)((n + 255) / 256), 256>>>(acc, g, n);
  QT_CUDA_CHECK(cudaGetLastError());
  return QT_OK;
}

/* Every device buffer of a context, freed together. */
struct dev_list {
  void **p;
  size_t n, cap;
  size_t bytes;                /* total allocated */
  bool measure;                /* count the bytes only: nothing allocated or copied
                                * (qt_model_cuda_plan_bytes; no GPU needed) */
};

qt_status dev_alloc_bytes(dev_list *dl, size_t bytes, void **out) {
  *out = NULL;
  if (dl->measure) {
    dl->bytes += bytes ? bytes : 1;
    return QT_OK;
  }
  if (dl->n == dl->cap) {
    size_t cap = dl->cap ? 2 * dl->cap : 256;
    void **np = (void **)realloc(dl->p, cap * sizeof *np);
    if (!np) return qt_fail(QT_ERR_NOMEM, "model_cuda: cannot grow the device buffer list");
    dl->p = np;
    dl->cap = cap;
  }
  void *d = NULL;
  QT_CUDA_CHECK(cudaMalloc(&d, bytes ? bytes : 1));
  dl->p[dl->n++] = d;
  dl->bytes += bytes ? bytes : 1;
  *out = d;
  return QT_OK;
}

template <typename T>
qt_status dev_alloc(dev_list *dl, int64_t count, T **out) {
  void *p = NULL;
  *out = NULL;
  QT_TRY(dev_alloc_bytes(dl, (size_t)count * sizeof(T), &p));
  *out = (T *)p;
  return QT_OK;
}

/* Frees every buffer (errors ignored: after a sticky CUDA error the first
 * failure was already reported). */
void dev_list_free(dev_list *dl) {
  for (size_t i = 0; i < dl->n; i++) (void)cudaFree(dl->p[i]);
  free(dl->p);
  dl->p = NULL;
  dl->n = dl->cap = 0;
  dl->bytes = 0;
}

template <typename T>
qt_status upload_raw(dev_list *dl, const T *h, int64_t count, T **out) {
  QT_TRY(dev_alloc(dl, count, out));
  if (dl->measure) return QT_OK;
  QT_CUDA_CHECK(cudaMemcpy(*out, h, (size_t)count * sizeof(T), cudaMemcpyHostToDevice));
  return QT_OK;
}

/* fp32 host -> bf16 device d (round to nearest even, common/half.h) through
 * the host staging buffer stage (>= count values). */
qt_status copy_bf16_in(uint16_t *d, const float *h, int64_t count, uint16_t *stage) {
  qt_bf16_from_f32_n(stage, h, (size_t)count);
  QT_CUDA_CHECK(cudaMemcpy(d, stage, (size_t)count * sizeof(uint16_t), cudaMemcpyHostToDevice));
  return QT_OK;
}

/* fp32 host -> a new bf16 device buffer (weights, at init). */
qt_status upload_bf16(dev_list *dl, const float *h, int64_t count, uint16_t **out) {
  QT_TRY(dev_alloc(dl, count, out));
  if (dl->measure) return QT_OK;
  uint16_t *tmp = (uint16_t *)malloc((size_t)count * sizeof(uint16_t) + 1);
  if (!tmp) return qt_fail(QT_ERR_NOMEM, "model_cuda: cannot allocate %lld bf16 staging values",
                           (long long)count);
  qt_status s = copy_bf16_in(*out, h, count, tmp);
  free(tmp);
  return s;
}

/* bf16 device -> fp32 host through the staging buffer. */
qt_status download_bf16(const uint16_t *d, int64_t count, float *h, uint16_t *stage) {
  QT_CUDA_CHECK(cudaMemcpy(stage, d, (size_t)count * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  qt_bf16_to_f32_n(h, stage, (size_t)count);
  return QT_OK;
}

/* One base linear on the device, with its LoRA buffers. */
struct dev_linear {
  const qt_model_linear *lin;
  uint16_t *w;                 /* (out, in) bf16 when dense */
  uint8_t *packed;             /* 4-bit codes when quantized */
  float *absmax;               /* (nblocks) when quantized and not nested */
  uint8_t *qabsmax;            /* (nblocks) when nested */
  float *nested_absmax;        /* (ceil(nblocks / nested_blocksize)) when nested */
  float *code;                 /* (256) the nested map when nested */
  uint16_t *bias;              /* (out) or NULL */
  uint16_t *A, *B;             /* (max_r, in), (out, max_r) bf16; r of this call used */
  const uint16_t *Aw, *Bw;     /* this call's weights: A, B, or the entry's dev_A, dev_B */
  uint16_t *u;                 /* (max_N, max_r) saved A xd of this layer's forward */
  /* this call */
  const qt_model_cuda_lora *ad;/* host entry, or NULL (no LoRA) */
  qt_dropout_cuda drop;        /* the entry's dropout stream, when drops */
  bool drops;                  /* this call drops this linear's LoRA input */
};

struct dev_layer {
  uint16_t *norm_in, *norm_post;  /* (C) */
  dev_linear lin[QT_PROJ_COUNT];
  qt_att_opts att;                /* the config's score scale and this layer's window */
  /* saved activations */
  uint16_t *x;                    /* (N, C) layer input */
  uint16_t *n1;                   /* (N, C) */
  float *rstd1;                   /* (N) */
  uint16_t *qr, *kr, *v;          /* (N, H*D), (N, K*D), (N, K*D) */
  uint16_t *a;                    /* (N, H*D) attention output */
  float *lse;                     /* (B, H, T) */
  uint16_t *h;                    /* (N, C) after the attention residual */
  uint16_t *n2;                   /* (N, C) */
  float *rstd2;                   /* (N) */
  uint16_t *g, *up, *sw;          /* (N, F) */
};

}  // namespace

struct qt_model_cuda {
  const qt_model *m;
  int64_t max_B, max_T, max_N, max_r, max_in;
  bool checkpoint;                /* one set of saved activations shared by the layers, recomputed in backward */
  /* Activation offloading (with checkpoint; model_cuda.h): layers[l].x is
   * ring slot l % 2 (layers 0 and 1 own the two device buffers, the others
   * alias them), every layer's input also has a slot in host_x. */
  bool offload;
  uint16_t *host_x;               /* (L, max_N, C) pinned host (cudaHostAlloc) */
  size_t host_bytes;              /* its size (also counted while measuring) */
  cudaStream_t copy_stream;       /* non-blocking: the copies between the ring and host_x */
  cudaEvent_t ev_compute;         /* recorded on the compute (default) stream, waited on by copy_stream */
  cudaEvent_t ev_copy;            /* recorded on copy_stream after a copy, waited on by the compute stream */
  /* this call */
  int64_t B, T, N, chunk;
  double scale;
  int64_t C, H, K, D, F, V, L, HD, KD;
  double eps;
  dev_list dl;
  qt_gemm_cuda *g;
  dev_layer *layers;              /* (L), host array of device pointers */
  uint16_t *stage;                /* host staging for LoRA A, B, dA, dB (bf16) */
  int64_t stage_n;
  uint16_t *x_out;                /* (N, C) the last layer's output */
  uint16_t *embed, *lm_head, *final_norm; /* embed NULL: the table stays on the host (untied) */
  uint16_t *embed_rows;           /* (max_N, C) host staging of a batch's embedding rows (untied) */
  float *inv_freq;                /* (D/2) */
  int32_t *ids, *targets, *pos, *doc;
  uint16_t *w_scratch;            /* (max out*in) dequantized weight */
  float *absmax_scratch;          /* (max nblocks) decompressed double-quant absmax */
  uint16_t *q, *k, *tmp_c;        /* (N, HD), (N, KD), (N, C) forward scratch */
  uint16_t *xf;                   /* (N, C) final-normed hidden */
  float *rstdf;                   /* (N) */
  float *ce_lse, *logits;         /* (N), (chunk, V) */
  uint16_t *dz;                   /* (chunk, V) */
  double *rowloss, *loss;         /* (N), (1) */
  int64_t *count;                 /* (1) */
  /* backward scratch */
  uint16_t *dxf, *dX, *dn, *dsw, *dg, *dup, *da, *dqr, *dkr, *dv, *dq, *dk, *du_lora;
  uint16_t *dA, *dB;              /* (max_r * max in), (max out * max_r) bf16: one linear's LoRA gradients,
                                   * zeroed before its backward and taken out right after (added into the
                                   * entry's dev_dA / dev_dB, or downloaded to its dA / dB), so one pair
                                   * serves every linear (0.08 GiB less than a pair per linear at
                                   * Llama-3-8B, r 16) */
  float *delta;                   /* (B, H, T) */
  uint16_t *xd;                   /* (max_N, max_in) a linear's dropped-out LoRA input, formed in
                                   * its forward and again in its backward (not saved per
                                   * linear: at Llama-3-8B x 2048 tokens that was ~5 GB) */
};

namespace {

/* train: the entries' gradients and dropout are used (forward_backward);
 * otherwise (qt_model_cuda_loss) only A, B and r. */
qt_status check_inputs(const qt_model_cuda *c, const qt_model_cuda_lora *lora, size_t n_lora,
                       const qt_model_batch *b, bool train) {
  const qt_model *m = c->m;
  if (!b->targets) return qt_fail(QT_ERR_INVALID, "model_cuda: the batch has no targets");
  if (b->B < 1 || b->T < 1)
    return qt_fail(QT_ERR_INVALID, "model_cuda: empty batch %lld x %lld", (long long)b->B,
                   (long long)b->T);
  if (b->B > c->max_B || b->T > c->max_T)
    return qt_fail(QT_ERR_INVALID, "model_cuda: batch %lld x %lld exceeds the context's %lld x "
                                   "%lld; create the context for the largest batch",
                   (long long)b->B, (long long)b->T, (long long)c->max_B, (long long)c->max_T);
  int64_t N = b->B * b->T;
  for (int64_t n = 0; n < N; n++) {
    if (b->ids[n] < 0 || b->ids[n] >= m->V)
      return qt_fail(QT_ERR_INVALID, "model_cuda: token id %d at %lld is outside the vocabulary "
                                     "(%lld); tokenizer and model do not match",
                     (int)b->ids[n], (long long)n, (long long)m->V);
    if (b->targets[n] != -100 && (b->targets[n] < 0 || b->targets[n] >= m->V))
      return qt_fail(QT_ERR_INVALID, "model_cuda: target %d at %lld is outside the vocabulary",
                     (int)b->targets[n], (long long)n);
    if (b->pos[n] < 0 || b->pos[n] >= m->cfg.max_position_embeddings)
      return qt_fail(QT_ERR_INVALID, "model_cuda: position %d is beyond max_position_embeddings "
                                     "%lld", (int)b->pos[n],
                     (long long)m->cfg.max_position_embeddings);
  }
  for (size_t i = 0; i < n_lora; i++) {
    const qt_model_cuda_lora *e = &lora[i];
    if (e->layer < 0 || e->layer >= m->L || (int)e->proj < 0 || (int)e->proj >= QT_PROJ_COUNT ||
        e->r < 1 || (!(e->A && e->B) && !(e->dev_A && e->dev_B)) ||
        (train && !(e->dA && e->dB) && !(e->dev_dA && e->dev_dB)))
      return qt_fail(QT_ERR_INVALID, "model_cuda: LoRA entry %zu (layer %d, proj %d, r %lld) is "
                                     "not a valid adapted linear", i, e->layer, (int)e->proj,
                     (long long)e->r);
    if (e->r > c->max_r)
      return qt_fail(QT_ERR_INVALID, "model_cuda: LoRA entry %zu has rank %lld, above the "
                                     "context's max_r %lld", i, (long long)e->r,
                     (long long)c->max_r);
    if (train && e->dropout &&
        (!(e->keep_scale > 0) || e->dropout_threshold < -1 ||
         e->dropout_threshold > (int64_t)UINT32_MAX))
      return qt_fail(QT_ERR_INVALID, "model_cuda: LoRA entry %zu has dropout with keep_scale %g "
                                     "and threshold %lld (need > 0 and -1 .. 2^32 - 1; fill "
                                     "them with qt_lora_dropout_stream)", i, e->keep_scale,
                     (long long)e->dropout_threshold);
    for (size_t j = 0; j < i; j++)
      if (lora[j].layer == e->layer && lora[j].proj == e->proj)
        return qt_fail(QT_ERR_INVALID, "model_cuda: LoRA entries %zu and %zu adapt the same "
                                       "linear (layer %d, %s)", j, i, e->layer,
                       qt_proj_name(e->proj));
  }
  return QT_OK;
}

/* The base weight, bias and the LoRA buffers of one linear. */
qt_status init_linear(qt_model_cuda *c, const qt_model_linear *lin, dev_linear *d, const dev_linear *share_u) {
  dev_list *dl = &c->dl;
  d->lin = lin;
  if (lin->quantized) {
    const qt_quant_weight *q = &lin->q;
    if (q->n != lin->out * lin->in)
      return qt_fail(QT_ERR_INVALID, "model_cuda: %s: 4-bit weight has %lld values, expected "
                                     "%lld x %lld", lin->name, (long long)q->n,
                     (long long)lin->out, (long long)lin->in);
    QT_TRY(upload_raw(dl, q->packed, (q->n + 1) / 2, &d->packed));
    if (q->nested) {
      int64_t nn = (q->nblocks + q->nested_blocksize - 1) / q->nested_blocksize;
      QT_TRY(upload_raw(dl, q->qabsmax, q->nblocks, &d->qabsmax));
      QT_TRY(upload_raw(dl, q->nested_absmax, nn, &d->nested_absmax));
      QT_TRY(upload_raw(dl, q->nested_code, 256, &d->code));
    } else {
      QT_TRY(upload_raw(dl, q->absmax, q->nblocks, &d->absmax));
    }
  } else {
    QT_TRY(upload_bf16(dl, lin->dense, lin->out * lin->in, &d->w));
  }
  if (lin->bias) QT_TRY(upload_bf16(dl, lin->bias, lin->out, &d->bias));
  int64_t r = c->max_r;
  QT_TRY(dev_alloc(dl, r * lin->in, &d->A));
  QT_TRY(dev_alloc(dl, lin->out * r, &d->B));
  if (share_u) /* checkpointing: this projection's u of layer 0, recomputed per layer */
    d->u = share_u->u;
  else
    QT_TRY(dev_alloc(dl, c->max_N * r, &d->u));
  return QT_OK;
}

/* Weights and every buffer for the largest batch. */
qt_status setup(qt_model_cuda *c) {
  const qt_model *m = c->m;
  int64_t N = c->max_N, C = c->C, L = c->L;
  dev_list *dl = &c->dl;
  int64_t max_w = 0, max_nb = 1, max_io = 1, max_out = 1;
  for (int64_t l = 0; l < L; l++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      const qt_model_linear *lin = &m->layers[l].proj[p];
      if (lin->quantized) {
        if (lin->out * lin->in > max_w) max_w = lin->out * lin->in;
        if (lin->q.nblocks > max_nb) max_nb = lin->q.nblocks;
      }
      if (lin->in > max_io) max_io = lin->in;
      if (lin->out > max_io) max_io = lin->out;
      if (lin->out > max_out) max_out = lin->out;
      if (lin->in > c->max_in) c->max_in = lin->in;
    }
  c->stage_n = c->max_r * max_io;
  c->stage = (uint16_t *)malloc((size_t)c->stage_n * sizeof(uint16_t));
  if (!c->stage)
    return qt_fail(QT_ERR_NOMEM, "model_cuda: cannot allocate %lld bf16 staging values",
                   (long long)c->stage_n);
  if (!dl->measure) QT_TRY(qt_gemm_cuda_create(&c->g, (size_t)QT_MODEL_CUDA_GEMM_WORKSPACE));
  if (c->offload) {
    /* every layer's input in pinned host memory (pageable memory would make
     * the async copies synchronous), the stream and events that move them */
    c->host_bytes = (size_t)(L * N * C) * sizeof(uint16_t);
    if (!dl->measure) {
      void *h = NULL;
      cudaError_t e = cudaHostAlloc(&h, c->host_bytes, cudaHostAllocDefault);
      if (e != cudaSuccess)
        return qt_fail(QT_ERR_CUDA, "model_cuda: cannot allocate %.1f MiB of pinned host memory for the offloaded "
                                    "layer inputs (%s); set training.activation_offloading: false",
                       (double)c->host_bytes / 1048576.0, cudaGetErrorString(e));
      c->host_x = (uint16_t *)h;
      QT_CUDA_CHECK(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
      QT_CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_compute, cudaEventDisableTiming));
      QT_CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_copy, cudaEventDisableTiming));
    }
  }
  /* weights */
  /* The embedding table stays on the host when the lm_head is its own
   * tensor: a micro-batch's rows are gathered there and go up (N x C bf16,
   * the same bf16 values as a device copy would hold), and V x C x 2 bytes of
   * device memory are saved (1 GiB at Llama-3-8B). Tied: the lm_head GEMM
   * needs the table on the device anyway. */
  if (m->lm_head == m->embed) {
    QT_TRY(upload_bf16(dl, m->embed, c->V * C, &c->embed));
    c->lm_head = c->embed;
  } else {
    QT_TRY(upload_bf16(dl, m->lm_head, c->V * C, &c->lm_head));
    c->embed_rows = (uint16_t *)malloc((size_t)(N * C) * sizeof(uint16_t));
    if (!c->embed_rows)
      return qt_fail(QT_ERR_NOMEM, "model_cuda: cannot allocate %lld bf16 embedding rows", (long long)(N * C));
  }
  QT_TRY(upload_bf16(dl, m->final_norm, C, &c->final_norm));
  QT_TRY(upload_raw(dl, m->inv_freq, c->D / 2, &c->inv_freq));
  for (int64_t l = 0; l < L; l++) {
    dev_layer *ly = &c->layers[l];
    QT_TRY(upload_bf16(dl, m->layers[l].input_norm, C, &ly->norm_in));
    QT_TRY(upload_bf16(dl, m->layers[l].post_norm, C, &ly->norm_post));
    ly->att.scale = m->cfg.attn_scale;
    ly->att.window = m->cfg.layer_window ? m->cfg.layer_window[l] : 0;
    for (int p = 0; p <= QT_PROJ_DOWN; p++) /* the seven of a llama-style layer (init refuses fused) */
      QT_TRY(init_linear(c, &m->layers[l].proj[p], &ly->lin[p],
                         c->checkpoint && l > 0 ? &c->layers[0].lin[p] : NULL));
  }
  /* batch */
  QT_TRY(dev_alloc(dl, N, &c->ids));
  QT_TRY(dev_alloc(dl, N, &c->targets));
  QT_TRY(dev_alloc(dl, N, &c->pos));
  QT_TRY(dev_alloc(dl, N, &c->doc));
  /* saved activations */
  int64_t BHT = c->max_B * c->H * c->max_T;
  for (int64_t l = 0; l < L; l++) {
    dev_layer *ly = &c->layers[l];
    if (c->offload && l >= 2) /* the ring: layer l's input in slot l % 2 */
      ly->x = c->layers[l % 2].x;
    else
      QT_TRY(dev_alloc(dl, N * C, &ly->x));
    if (c->checkpoint && l > 0) { /* the rest shared with layer 0, recomputed in backward */
      const dev_layer *l0 = &c->layers[0];
      ly->n1 = l0->n1;
      ly->rstd1 = l0->rstd1;
      ly->qr = l0->qr;
      ly->kr = l0->kr;
      ly->v = l0->v;
      ly->a = l0->a;
      ly->lse = l0->lse;
      ly->h = l0->h;
      ly->n2 = l0->n2;
      ly->rstd2 = l0->rstd2;
      ly->g = l0->g;
      ly->up = l0->up;
      ly->sw = l0->sw;
      continue;
    }

    QT_TRY(dev_alloc(dl, N * C, &ly->n1));
    QT_TRY(dev_alloc(dl, N, &ly->rstd1));
    QT_TRY(dev_alloc(dl, N * c->HD, &ly->qr));
    QT_TRY(dev_alloc(dl, N * c->KD, &ly->kr));
    QT_TRY(dev_alloc(dl, N * c->KD, &ly->v));
    QT_TRY(dev_alloc(dl, N * c->HD, &ly->a));
    QT_TRY(dev_alloc(dl, BHT, &ly->lse));
    QT_TRY(dev_alloc(dl, N * C, &ly->h));
    QT_TRY(dev_alloc(dl, N * C, &ly->n2));
    QT_TRY(dev_alloc(dl, N, &ly->rstd2));
    QT_TRY(dev_alloc(dl, N * c->F, &ly->g));
    QT_TRY(dev_alloc(dl, N * c->F, &ly->up));
    QT_TRY(dev_alloc(dl, N * c->F, &ly->sw));
  }
  QT_TRY(dev_alloc(dl, N * C, &c->x_out));
  /* forward scratch */
  int64_t chunk = N < 256 ? N : 256;
  QT_TRY(dev_alloc(dl, max_w > 0 ? max_w : 1, &c->w_scratch));
  QT_TRY(dev_alloc(dl, max_nb, &c->absmax_scratch));
  QT_TRY(dev_alloc(dl, N * c->HD, &c->q));
  QT_TRY(dev_alloc(dl, N * c->KD, &c->k));
  QT_TRY(dev_alloc(dl, N * C, &c->tmp_c));
  QT_TRY(dev_alloc(dl, N * C, &c->xf));
  QT_TRY(dev_alloc(dl, N, &c->rstdf));
  QT_TRY(dev_alloc(dl, N, &c->ce_lse));
  QT_TRY(dev_alloc(dl, chunk * c->V, &c->logits));
  QT_TRY(dev_alloc(dl, chunk * c->V, &c->dz));
  QT_TRY(dev_alloc(dl, N, &c->rowloss));
  QT_TRY(dev_alloc(dl, 1, &c->loss));
  QT_TRY(dev_alloc(dl, 1, &c->count));
  /* backward scratch */
  QT_TRY(dev_alloc(dl, N * C, &c->dxf));
  QT_TRY(dev_alloc(dl, N * C, &c->dX));
  QT_TRY(dev_alloc(dl, N * C, &c->dn));
  QT_TRY(dev_alloc(dl, N * c->F, &c->dsw));
  QT_TRY(dev_alloc(dl, N * c->F, &c->dg));
  QT_TRY(dev_alloc(dl, N * c->F, &c->dup));
  QT_TRY(dev_alloc(dl, N * c->HD, &c->da));
  QT_TRY(dev_alloc(dl, N * c->HD, &c->dqr));
  QT_TRY(dev_alloc(dl, N * c->KD, &c->dkr));
  QT_TRY(dev_alloc(dl, N * c->KD, &c->dv));
  QT_TRY(dev_alloc(dl, N * c->HD, &c->dq));
  QT_TRY(dev_alloc(dl, N * c->KD, &c->dk));
  QT_TRY(dev_alloc(dl, N * c->max_r, &c->du_lora));
  QT_TRY(dev_alloc(dl, c->max_r * c->max_in, &c->dA));
  QT_TRY(dev_alloc(dl, max_out * c->max_r, &c->dB));
  QT_TRY(dev_alloc(dl, BHT, &c->delta));
  return QT_OK;
}

/* This call's LoRA: A, B in; with train, dA, dB zeroed and the dropout
 * streams bound (the dropout scratch made at the first call with
 * dropout); every other linear plain. */
qt_status bind_lora(qt_model_cuda *c, const qt_model_cuda_lora *lora, size_t n_lora, bool train) {
  for (int64_t l = 0; l < c->L; l++)
    for (int p = 0; p < QT_PROJ_COUNT; p++) {
      c->layers[l].lin[p].ad = NULL;
      c->layers[l].lin[p].drops = false;
    }
  for (size_t i = 0; i < n_lora; i++) {
    const qt_model_cuda_lora *e = &lora[i];
    dev_linear *d = &c->layers[e->layer].lin[e->proj];
    int64_t in = d->lin->in, out = d->lin->out, r = e->r;
    d->ad = e;
    if (e->dev_A && e->dev_B) { /* device-resident weights: read in place */
      d->Aw = e->dev_A;
      d->Bw = e->dev_B;
    } else {
      QT_TRY(copy_bf16_in(d->A, e->A, r * in, c->stage));
      QT_TRY(copy_bf16_in(d->B, e->B, out * r, c->stage));
      d->Aw = d->A;
      d->Bw = d->B;
    }
    if (!train || !e->dropout) continue;
    /* One shared scratch for dropout, made at the first call with dropout
     * and kept: the dropped-out input, formed where it is used (the mask is
     * drawn in the kernels), and, once dA has read it, the backward's du A. */
    if (!c->xd) QT_TRY(dev_alloc(&c->dl, c->max_N * c->max_in, &c->xd));
    d->drop = qt_dropout_cuda{e->dropout_key, e->dropout_subsequence, e->dropout_threshold,
                              e->keep_scale};
    d->drops = true;
  }
  return QT_OK;
}

/* The fp32 absmax of a quantized linear: stored, or decompressed from the
 * double quantization into the scratch (as model.c fill_weight on the CPU). */
qt_status linear_absmax(qt_model_cuda *c, const dev_linear *d, const float **am) {
  const qt_quant_weight *q = &d->lin->q;
  if (!q->nested) {
    *am = d->absmax;
    return QT_OK;
  }
  QT_TRY(qt_quant_dq_decompress_cuda(d->code, d->qabsmax, d->nested_absmax, q->offset,
                                     q->nblocks, c->absmax_scratch, NULL));
  *am = c->absmax_scratch;
  return QT_OK;
}

/* y (N, out) = x W^T (+ bias) (+ scale B (A xd), saving A xd; with dropout
 * xd = bf16(x * keep * keep_scale) in the shared scratch, not saved). */
qt_status linear_forward(qt_model_cuda *c, dev_linear *d, uint16_t *y, const uint16_t *x) {
  const qt_model_linear *lin = d->lin;
  if (lin->quantized) {
    const float *am = NULL;
    QT_TRY(linear_absmax(c, d, &am));
    QT_TRY(qt_op_linear4_forward_cuda(y, c->w_scratch, x, lin->q.type, d->packed, am,
                                      lin->q.blocksize, d->bias, c->N, lin->in, lin->out, c->g,
                                      NULL));
  } else {
    QT_TRY(qt_op_linear_forward_cuda(y, x, d->w, d->bias, c->N, lin->in, lin->out, c->g, NULL));
  }
  if (d->ad)
    QT_TRY(qt_op_lora_forward_cuda(y, d->u, d->drops ? c->xd : NULL, x,
                                   d->drops ? &d->drop : NULL, d->Aw, d->Bw, c->scale, c->N,
                                   lin->in, lin->out, d->ad->r, c->g, NULL));
  return QT_OK;
}

/* dx (N, in) (+)= dy W (+ the LoRA path), and the entry's gradients out: its
 * dev_dA, dev_dB += them (fp32, widened from bf16), or its host dA, dB = them
 * (a synchronous download); x is the forward input (the LoRA's xd is formed
 * from it again with dropout). */
qt_status linear_backward(qt_model_cuda *c, dev_linear *d, uint16_t *dx, int acc,
                          const uint16_t *dy, const uint16_t *x) {
  const qt_model_linear *lin = d->lin;
  if (lin->quantized) {
    const float *am = NULL;
    QT_TRY(linear_absmax(c, d, &am));
    QT_TRY(qt_op_linear4_backward_cuda(dx, acc, c->w_scratch, dy, lin->q.type, d->packed, am,
                                       lin->q.blocksize, c->N, lin->in, lin->out, c->g, NULL));
  } else {
    QT_TRY(qt_op_linear_backward_cuda(dx, acc, dy, d->w, c->N, lin->in, lin->out, c->g, NULL));
  }
  if (d->ad && d->drops) /* the dropped-out input again (same keys: the same bits) */
    QT_TRY(qt_op_lora_dropout_cuda(c->xd, x, &d->drop, c->N, lin->in, NULL));
  if (!d->ad) return QT_OK;
  const qt_model_cuda_lora *e = d->ad;
  int64_t nA = e->r * lin->in, nB = lin->out * e->r;
  /* the shared bf16 pair from 0 (the op accumulates), as each linear's own pair was before */
  QT_CUDA_CHECK(cudaMemset(c->dA, 0, (size_t)nA * sizeof(uint16_t)));
  QT_CUDA_CHECK(cudaMemset(c->dB, 0, (size_t)nB * sizeof(uint16_t)));
  QT_TRY(qt_op_lora_backward_cuda(dx, 1, c->dA, c->dB, c->du_lora,
                                  d->drops ? c->xd : NULL, dy, d->drops ? c->xd : x,
                                  d->u, d->drops ? &d->drop : NULL, d->Aw, d->Bw, c->scale, c->N,
                                  lin->in, lin->out, e->r, c->g, NULL));
  /* out before the next linear's backward reuses the pair (all on the default stream) */
  if (e->dev_dA && e->dev_dB) { /* device-resident: accumulate in fp32, download nothing */
    QT_TRY(acc_bf16(e->dev_dA, c->dA, nA));
    return acc_bf16(e->dev_dB, c->dB, nB);
  }
  QT_TRY(download_bf16(c->dA, nA, e->dA, c->stage));
  return download_bf16(c->dB, nB, e->dB, c->stage);
}
/* model.c decoder_layer, forward: out (N, C) from ly->x. */
/* Decoding (qt_model_cuda_decoder_init): this layer's KV cache, (cap, K*D)
 * bf16 each, and the position of the call's first row. */
struct dec_step {
  uint16_t *kc, *vc;
  int64_t pos0;
};

qt_status layer_forward(qt_model_cuda *c, dev_layer *ly, uint16_t *out, const dec_step *dec) {
  int64_t N = c->N, C = c->C;
  QT_TRY(qt_op_rmsnorm_forward_cuda(ly->n1, ly->rstd1, ly->x, ly->norm_in, c->eps, N, C, NULL));
  QT_TRY(linear_forward(c, &ly->lin[QT_PROJ_Q], c->q, ly->n1));
  QT_TRY(linear_forward(c, &ly->lin[QT_PROJ_K], c->k, ly->n1));
  QT_TRY(linear_forward(c, &ly->lin[QT_PROJ_V], ly->v, ly->n1));
  QT_TRY(qt_op_rope_forward_cuda(ly->qr, c->q, c->pos, c->inv_freq, N, c->H, c->D, NULL));
  QT_TRY(qt_op_rope_forward_cuda(ly->kr, c->k, c->pos, c->inv_freq, N, c->K, c->D, NULL));
  if (dec) { /* the rows' keys and values into the cache, attention over it */
    size_t bytes = (size_t)(N * c->KD) * sizeof(uint16_t);
    QT_CUDA_CHECK(cudaMemcpyAsync(dec->kc + dec->pos0 * c->KD, ly->kr, bytes, cudaMemcpyDeviceToDevice, 0));
    QT_CUDA_CHECK(cudaMemcpyAsync(dec->vc + dec->pos0 * c->KD, ly->v, bytes, cudaMemcpyDeviceToDevice, 0));
    QT_TRY(qt_op_attention_decode_cuda(ly->a, ly->qr, dec->kc, dec->vc, N, dec->pos0, c->H, c->K, c->D,
                                       NULL, &ly->att));
  } else {
    QT_TRY(qt_op_attention_forward_cuda(ly->a, ly->lse, ly->qr, ly->kr, ly->v, c->doc, c->B, c->T,
                                        c->H, c->K, c->D, NULL, &ly->att));
  }
  QT_TRY(linear_forward(c, &ly->lin[QT_PROJ_O], c->tmp_c, ly->a));
  QT_TRY(qt_op_add_forward_cuda(ly->h, ly->x, c->tmp_c, N * C, NULL));
  QT_TRY(qt_op_rmsnorm_forward_cuda(ly->n2, ly->rstd2, ly->h, ly->norm_post, c->eps, N, C, NULL));
  QT_TRY(linear_forward(c, &ly->lin[QT_PROJ_GATE], ly->g, ly->n2));
  QT_TRY(linear_forward(c, &ly->lin[QT_PROJ_UP], ly->up, ly->n2));
  QT_TRY(qt_op_swiglu_forward_cuda(ly->sw, ly->g, ly->up, N * c->F, NULL));
  QT_TRY(linear_forward(c, &ly->lin[QT_PROJ_DOWN], c->tmp_c, ly->sw));
  return qt_op_add_forward_cuda(out, ly->h, c->tmp_c, N * C, NULL);
}

/* Backward of one layer: c->dX holds d(out) on entry and d(ly->x) on exit
 * (both residual adds pass the gradient through unchanged). */
qt_status layer_backward(qt_model_cuda *c, dev_layer *ly) {
  int64_t N = c->N, C = c->C;
  /* out = h + down(swiglu(gate(n2), up(n2))) */
  QT_TRY(linear_backward(c, &ly->lin[QT_PROJ_DOWN], c->dsw, 0, c->dX, ly->sw));
  QT_TRY(qt_op_swiglu_backward_cuda(c->dg, c->dup, 0, c->dsw, ly->g, ly->up, N * c->F, NULL));
  QT_TRY(linear_backward(c, &ly->lin[QT_PROJ_GATE], c->dn, 0, c->dg, ly->n2));
  QT_TRY(linear_backward(c, &ly->lin[QT_PROJ_UP], c->dn, 1, c->dup, ly->n2));
  QT_TRY(qt_op_rmsnorm_backward_cuda(c->dX, 1, c->dn, ly->h, ly->norm_post, ly->rstd2, N, C,
                                     NULL));
  /* h = x + o(attention(rope(q(n1)), rope(k(n1)), v(n1))) */
  QT_TRY(linear_backward(c, &ly->lin[QT_PROJ_O], c->da, 0, c->dX, ly->a));
  QT_TRY(qt_op_attention_backward_cuda(c->dqr, c->dkr, c->dv, 0, c->delta, c->da, ly->a, ly->lse,
                                       ly->qr, ly->kr, ly->v, c->doc, c->B, c->T, c->H, c->K,
                                       c->D, NULL, &ly->att));
  QT_TRY(qt_op_rope_backward_cuda(c->dq, 0, c->dqr, c->pos, c->inv_freq, N, c->H, c->D, NULL));
  QT_TRY(qt_op_rope_backward_cuda(c->dk, 0, c->dkr, c->pos, c->inv_freq, N, c->K, c->D, NULL));
  QT_TRY(linear_backward(c, &ly->lin[QT_PROJ_Q], c->dn, 0, c->dq, ly->n1));
  QT_TRY(linear_backward(c, &ly->lin[QT_PROJ_K], c->dn, 1, c->dk, ly->n1));
  QT_TRY(linear_backward(c, &ly->lin[QT_PROJ_V], c->dn, 1, c->dv, ly->n1));
  return qt_op_rmsnorm_backward_cuda(c->dX, 1, c->dn, ly->x, ly->norm_in, ly->rstd1, N, C, NULL);
}

/* Forward (loss and count copied out), then with train and LoRA the backward
 * and the gradients copied out. */
/* layers[0].x (N, C) = the embeddings of ids (host; c->ids already holds
 * them on the device when the table is there). */
qt_status embed_rows(qt_model_cuda *c, const int32_t *ids, int64_t N) {
  int64_t C = c->C;
  if (c->embed) return qt_op_embedding_forward_cuda(c->layers[0].x, c->ids, c->embed, N, C, c->V, NULL);
  /* the host's table: the rows, rounded to bf16, go up (ids checked in range) */
  for (int64_t n = 0; n < N; n++) /* ~10-30 ms at 8B x 4096 tokens, one thread (no OpenMP in .cu files) */
    qt_bf16_from_f32_n(c->embed_rows + n * C, c->m->embed + (int64_t)ids[n] * C, (size_t)C);
  QT_CUDA_CHECK(cudaMemcpy(c->layers[0].x, c->embed_rows, (size_t)(N * C) * sizeof(uint16_t),
                           cudaMemcpyHostToDevice));
  return QT_OK;
}

/* Activation offloading (model_cuda.h). Every op runs on the default stream
 * (the compute stream, ordered); the copies run on c->copy_stream, which is
 * non-blocking (no implicit ordering with the default stream), so each
 * dependency between the two is an event:
 *  - a copy may read or write a ring slot only after the compute stream's
 *    earlier work on it: ev_compute is recorded on the compute stream and
 *    copy_stream waits for it before the copy;
 *  - the compute stream may overwrite a slot being copied out, or read a
 *    slot being fetched, only after that copy: ev_copy is recorded on
 *    copy_stream after the copy and the compute stream waits for it.
 * One event each suffices: each wait is issued before the next record of the
 * same event (cudaStreamWaitEvent waits for the most recent record at the
 * time of the call), and the copies run in issue order on copy_stream
 * (layer l's copy out precedes its fetch back, and a slot's copy out precedes
 * the fetch into it). The call ends with cudaDeviceSynchronize, which waits
 * for both streams, before the next call reuses the ring. */

/* Host slot of layer l's input ((max_N, C) per layer). */
uint16_t *host_slot(const qt_model_cuda *c, int64_t l) { return c->host_x + l * c->max_N * c->C; }

/* Forward, before layer l: its input (ring slot l % 2, written by the
 * embedding or layer l - 1 on the compute stream) is copied out to its host
 * slot while layer l computes. Layer l writes its output into slot
 * (l + 1) % 2, which holds layer l - 1's input until that input's copy out
 * (issued before layer l - 1, overlapping it) is done: wait for it first. */
qt_status offload_save(qt_model_cuda *c, int64_t l) {
  if (l > 0) QT_CUDA_CHECK(cudaStreamWaitEvent(0, c->ev_copy, 0)); /* layer l - 1's input is out */
  QT_CUDA_CHECK(cudaEventRecord(c->ev_compute, 0));                 /* layer l's input is written */
  QT_CUDA_CHECK(cudaStreamWaitEvent(c->copy_stream, c->ev_compute, 0));
  QT_CUDA_CHECK(cudaMemcpyAsync(host_slot(c, l), c->layers[l].x, (size_t)(c->N * c->C) * sizeof(uint16_t),
                                cudaMemcpyDeviceToHost, c->copy_stream));
  QT_CUDA_CHECK(cudaEventRecord(c->ev_copy, c->copy_stream));
  return QT_OK;
}

/* Backward, before layer l (its forward again, then its backward; the
 * recomputed output goes to x_out, not into the ring): layer l's input must
 * be in slot l % 2 (layer L - 1's never left it: the last forward layer
 * wrote x_out; the others were fetched by the previous call of this), and
 * layer l - 1's is fetched into slot (l - 1) % 2 while layer l runs. That
 * slot was last read by layer l + 1's backward (or, for l = L - 1, by layer
 * L - 2's forward), queued before this point on the compute stream. */
qt_status offload_fetch(qt_model_cuda *c, int64_t l) {
  if (l + 1 < c->L) QT_CUDA_CHECK(cudaStreamWaitEvent(0, c->ev_copy, 0)); /* layer l's input is in */
  if (l == 0) return QT_OK;
  QT_CUDA_CHECK(cudaEventRecord(c->ev_compute, 0)); /* slot (l - 1) % 2 is no longer read */
  QT_CUDA_CHECK(cudaStreamWaitEvent(c->copy_stream, c->ev_compute, 0));
  QT_CUDA_CHECK(cudaMemcpyAsync(c->layers[l - 1].x, host_slot(c, l - 1), (size_t)(c->N * c->C) * sizeof(uint16_t),
                                cudaMemcpyHostToDevice, c->copy_stream));
  QT_CUDA_CHECK(cudaEventRecord(c->ev_copy, c->copy_stream));
  return QT_OK;
}

qt_status run(qt_model_cuda *c, const qt_model_cuda_lora *lora, size_t n_lora,
              const qt_model_batch *b, bool train, double dloss, double *loss_sum,
              int64_t *count) {
  int64_t N = c->N, C = c->C, L = c->L;
  QT_TRY(bind_lora(c, lora, n_lora, train));
  QT_CUDA_CHECK(cudaMemcpy(c->ids, b->ids, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));
  QT_CUDA_CHECK(cudaMemcpy(c->targets, b->targets, (size_t)N * sizeof(int32_t),
                           cudaMemcpyHostToDevice));
  QT_CUDA_CHECK(cudaMemcpy(c->pos, b->pos, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));
  QT_CUDA_CHECK(cudaMemcpy(c->doc, b->doc, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice));
  bool backward = train && n_lora > 0;
  bool offload = c->offload && backward; /* without a backward the inputs are not needed again */
  /* forward */
  QT_TRY(embed_rows(c, b->ids, N));
  for (int64_t l = 0; l < L; l++) {
    if (offload) QT_TRY(offload_save(c, l));
    QT_TRY(layer_forward(c, &c->layers[l], l + 1 < L ? c->layers[l + 1].x : c->x_out, NULL));
  }
  QT_TRY(qt_op_rmsnorm_forward_cuda(c->xf, c->rstdf, c->x_out, c->final_norm, c->eps, N, C,
                                    NULL));
  if (backward) {
    /* the loss and its gradient in one pass over the logits (the CPU tape's
     * grad-in-forward): d(sum loss)/d xf into dxf, then scaled by dloss in
     * place; two lm_head GEMMs per chunk instead of three */
    QT_TRY(qt_op_cross_entropy_fused_cuda(c->dxf, c->loss, c->count, c->logits, c->dz, c->rowloss,
                                          c->chunk, c->xf, c->lm_head, c->targets, N, C, c->V, 0.0,
                                          c->g, NULL));
    QT_TRY(qt_op_scaled_add_cuda(c->dxf, 0, c->dxf, dloss, N * C, NULL));
  } else {
    QT_TRY(qt_op_cross_entropy_forward_cuda(c->loss, c->count, c->ce_lse, c->rowloss, c->logits,
                                            c->chunk, c->xf, c->lm_head, c->targets, N, C, c->V,
                                            0.0, c->g, NULL));
  }
  QT_CUDA_CHECK(cudaMemcpy(loss_sum, c->loss, sizeof(double), cudaMemcpyDeviceToHost));
  QT_CUDA_CHECK(cudaMemcpy(count, c->count, sizeof(int64_t), cudaMemcpyDeviceToHost));
  if (!backward) return QT_OK;
  /* backward: final norm -> layers, last first */
  QT_TRY(qt_op_rmsnorm_backward_cuda(c->dX, 0, c->dxf, c->x_out, c->final_norm, c->rstdf, N, C,
                                     NULL));
  for (int64_t l = L - 1; l >= 0; l--) {
    if (offload) QT_TRY(offload_fetch(c, l));
    /* checkpointing: the layer's forward again from its saved input (the
     * same kernels and dropout streams: the same values). Its output is not
     * read: it goes to x_out, free since the final norm's backward above
     * (not into layers[l + 1].x, with offloading the ring slot that layer
     * l - 1's input is being fetched into) */
    if (c->checkpoint) QT_TRY(layer_forward(c, &c->layers[l], c->x_out, NULL));
    QT_TRY(layer_backward(c, &c->layers[l]));
  }
  return QT_OK;
}

}  // namespace

/* This explicit CUDA model composes the llama-style layer only; the
 * families' variations (model/model.h) run on the CPU tape. */
extern "C" bool qt_model_cuda_composes(const qt_hf_config *hc) {
  QT_ASSERT(hc);
  return !(hc->fused_qkv || hc->fused_gate_up || hc->qk_norm || hc->norm_plus_one ||
           hc->sandwich_norm || hc->embed_scale || hc->attn_softcap > 0 ||
           hc->final_softcap > 0 || hc->act != QT_HF_ACT_SILU || hc->has_rope_local);
}

/* A context made (measure false) or only sized (measure true: setup counts
 * the bytes of every buffer and allocates nothing). */
static qt_status make_context(const qt_model *m, int64_t max_B, int64_t max_T, int64_t max_r,
                              const qt_model_cuda_opts *opts, bool measure, qt_model_cuda **out) {
  QT_ASSERT(m && opts && out);
  *out = NULL;
  if (max_B < 1 || max_T < 1 || max_r < 1)
    return qt_fail(QT_ERR_INVALID, "model_cuda: context for %lld x %lld tokens, rank %lld: each "
                                   "must be >= 1", (long long)max_B, (long long)max_T,
                   (long long)max_r);
  if (opts->offload && !opts->checkpoint)
    return qt_fail(QT_ERR_INVALID, "model_cuda: activation offloading moves the checkpointed layer inputs "
                                   "to the host: it needs checkpointing");
  const qt_hf_config *hc = &m->cfg;
  if (!qt_model_cuda_composes(hc))
    return qt_fail(QT_ERR_UNSUPPORTED, "model_cuda: %s models train on the CPU for now (the CUDA "
                                       "path composes llama/mistral/qwen2 layers); set "
                                       "training.device: cpu", qt_hf_arch_name(hc->arch));
  qt_model_cuda *c = (qt_model_cuda *)calloc(1, sizeof *c);
  if (!c) return qt_fail(QT_ERR_NOMEM, "model_cuda: cannot allocate the context");
  c->dl.measure = measure;
  c->checkpoint = opts->checkpoint;
  c->offload = opts->offload;
  c->m = m;
  c->max_B = max_B;
  c->max_T = max_T;
  c->max_N = max_B * max_T;
  c->max_r = max_r;
  c->C = m->C;
  c->H = m->H;
  c->K = m->K;
  c->D = m->D;
  c->F = m->F;
  c->V = m->V;
  c->L = m->L;
  c->HD = m->H * m->D;
  c->KD = m->K * m->D;
  c->eps = m->cfg.rms_norm_eps;
  c->layers = (dev_layer *)calloc((size_t)m->L, sizeof(dev_layer));
  qt_status s = c->layers ? setup(c)
                          : qt_fail(QT_ERR_NOMEM, "model_cuda: cannot allocate %lld layers",
                                    (long long)m->L);
  if (s == QT_OK && !measure) {
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaDeviceSynchronize");
  }
  if (s != QT_OK) {
    qt_model_cuda_free(&c);
    return s;
  }
  *out = c;
  return QT_OK;
}

extern "C" qt_status qt_model_cuda_init(const qt_model *m, int64_t max_B, int64_t max_T,
                                        int64_t max_r, const qt_model_cuda_opts *opts,
                                        qt_model_cuda **out) {
  return make_context(m, max_B, max_T, max_r, opts, false, out);
}

extern "C" qt_status qt_model_cuda_plan_bytes(const qt_model *m, int64_t max_B, int64_t max_T,
                                              int64_t max_r, const qt_model_cuda_opts *opts,
                                              bool dropout, size_t *bytes, size_t *host_bytes) {
  QT_ASSERT(bytes);
  *bytes = 0;
  if (host_bytes) *host_bytes = 0;
  qt_model_cuda *c = NULL;
  QT_TRY(make_context(m, max_B, max_T, max_r, opts, true, &c));
  *bytes = c->dl.bytes;
  if (dropout) /* the shared dropout scratch of bind_lora */
    *bytes += (size_t)(c->max_N * c->max_in) * sizeof(uint16_t);
  if (host_bytes) *host_bytes = c->host_bytes;
  qt_model_cuda_free(&c);
  return QT_OK;
}

extern "C" size_t qt_model_cuda_device_bytes(const qt_model_cuda *c) {
  QT_ASSERT(c);
  return c->dl.bytes;
}

extern "C" size_t qt_model_cuda_host_bytes(const qt_model_cuda *c) {
  QT_ASSERT(c);
  return c->host_bytes;
}

namespace {

/* One call of either entry point on the context's buffers. */
qt_status call(qt_model_cuda *c, const qt_model_cuda_lora *lora, size_t n_lora, double scale,
               const qt_model_batch *b, bool train, double dloss, double *loss_sum,
               int64_t *count) {
  QT_ASSERT(c && b && loss_sum && count && (lora || n_lora == 0));
  *loss_sum = 0;
  *count = 0;
  QT_TRY(check_inputs(c, lora, n_lora, b, train));
  c->B = b->B;
  c->T = b->T;
  c->N = b->B * b->T;
  c->chunk = c->N < 256 ? c->N : 256;
  c->scale = scale;
  qt_status s = run(c, lora, n_lora, b, train, dloss, loss_sum, count);
  /* Let queued work finish (the buffers are reused by the next call); after a
   * failure its own error is the one reported. */
  cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess && s == QT_OK) s = QT_CUDA_FAIL(e, __FILE__, __LINE__, "cudaDeviceSynchronize");
  return s;
}

}  // namespace

extern "C" qt_status qt_model_cuda_forward_backward(qt_model_cuda *c,
                                                    const qt_model_cuda_lora *lora,
                                                    size_t n_lora, double scale,
                                                    const qt_model_batch *b, double dloss,
                                                    double *loss_sum, int64_t *count) {
  return call(c, lora, n_lora, scale, b, true, dloss, loss_sum, count);
}

extern "C" qt_status qt_model_cuda_loss(qt_model_cuda *c, const qt_model_cuda_lora *lora,
                                        size_t n_lora, double scale, const qt_model_batch *b,
                                        double *loss_sum, int64_t *count) {
  return call(c, lora, n_lora, scale, b, false, 0.0, loss_sum, count);
}

extern "C" qt_status qt_model_cuda_round_bf16(uint16_t *dst, const float *src, int64_t n) {
  QT_ASSERT(n >= 0 && (n == 0 || (dst && src)));
  if (n == 0) return QT_OK;
  round_bf16_kernel<<<(unsigned)((n + 255) / 256), 256>>>(dst, src, n);
  QT_CUDA_CHECK(cudaGetLastError());
  return QT_OK;
}

extern "C" void qt_model_cuda_free(qt_model_cuda **pc) {
  if (!pc || !*pc) return;
  qt_model_cuda *c = *pc;
  if (!c->dl.measure) (void)cudaDeviceSynchronize(); /* nothing queued may still read what is freed */
  if (c->g) (void)qt_gemm_cuda_free(c->g);
  if (c->ev_copy) (void)cudaEventDestroy(c->ev_copy);
  if (c->ev_compute) (void)cudaEventDestroy(c->ev_compute);
  if (c->copy_stream) (void)cudaStreamDestroy(c->copy_stream);
  if (c->host_x) (void)cudaFreeHost(c->host_x);
  dev_list_free(&c->dl);
  free(c->layers);
  free(c->stage);
  free(c->embed_rows);
  free(c);
  *pc = NULL;
}

extern "C" qt_status qt_model_forward_backward_cuda(const qt_model *m,
                                                    const qt_model_cuda_lora *lora,
                                                    size_t n_lora, double scale,
                                                    const qt_model_batch *b, double dloss,
                                                    double *loss_sum, int64_t *count) {
  QT_ASSERT(m && b && loss_sum && count && (lora || n_lora == 0));
  *loss_sum = 0;
  *count = 0;
  if (b->B < 1 || b->T < 1)
    return qt_fail(QT_ERR_INVALID, "model_cuda: empty batch %lld x %lld", (long long)b->B,
                   (long long)b->T);
  int64_t max_r = 1;
  for (size_t i = 0; i < n_lora; i++)
    if (lora[i].r > max_r) max_r = lora[i].r;
  qt_model_cuda *c = NULL;
  const qt_model_cuda_opts keep_all = {false, false};
  QT_TRY(qt_model_cuda_init(m, b->B, b->T, max_r, &keep_all, &c));
  qt_status s = qt_model_cuda_forward_backward(c, lora, n_lora, scale, b, dloss, loss_sum, count);
  qt_model_cuda_free(&c);
  return s;
}

/* ---- decoding with a KV cache on the device (model_cuda.h) ---------------------------- */

namespace {

struct cuda_decoder {
  qt_model_cuda *c;               /* borrowed: its weights, LoRA and row buffers */
  qt_model_cuda_lora *lora;       /* (n_lora) the entries, bound to c for every feed */
  size_t n_lora;
  int64_t cap;
  uint16_t *kcache, *vcache;      /* (L, cap, K*D) bf16 each (own cudaMalloc: freed with the decoder) */
  uint16_t *dlogits;              /* (V) bf16 (likewise) */
  uint16_t *hlogits;              /* (V) host staging */
  int32_t *hpos;                  /* (max rows) host positions */
  size_t bytes;                   /* device bytes it holds */
};

qt_status cuda_decoder_feed(void *ctx, const int32_t *ids, int64_t n, int64_t pos0, float *logits) {
  cuda_decoder *d = (cuda_decoder *)ctx;
  qt_model_cuda *c = d->c;
  QT_ASSERT(n >= 1 && n <= c->max_N && pos0 + n <= d->cap);
  c->B = 1;
  c->T = n;
  c->N = n;
  c->chunk = n < 256 ? n : 256;
  for (int64_t i = 0; i < n; i++) d->hpos[i] = (int32_t)(pos0 + i);
  QT_CUDA_CHECK(cudaMemcpy(c->pos, d->hpos, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice));
  if (c->embed)
    QT_CUDA_CHECK(cudaMemcpy(c->ids, ids, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice));
  QT_TRY(embed_rows(c, ids, n));
  int64_t KD = c->KD, C = c->C;
  for (int64_t l = 0; l < c->L; l++) {
    dec_step st = {d->kcache + l * d->cap * KD, d->vcache + l * d->cap * KD, pos0};
    QT_TRY(layer_forward(c, &c->layers[l], l + 1 < c->L ? c->layers[l + 1].x : c->x_out, &st));
  }
  /* the final norm and lm_head for the last row only */
  QT_TRY(qt_op_rmsnorm_forward_cuda(c->xf, c->rstdf, c->x_out + (n - 1) * C, c->final_norm, c->eps, 1, C,
                                    NULL));
  QT_TRY(qt_op_linear_forward_cuda(d->dlogits, c->xf, c->lm_head, NULL, 1, C, c->V, c->g, NULL));
  QT_CUDA_CHECK(cudaMemcpy(d->hlogits, d->dlogits, (size_t)c->V * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  qt_bf16_to_f32_n(logits, d->hlogits, (size_t)c->V);
  return QT_OK;
}

size_t cuda_decoder_bytes(const void *ctx) { return ((const cuda_decoder *)ctx)->bytes; }

void cuda_decoder_free(void *ctx) {
  cuda_decoder *d = (cuda_decoder *)ctx;
  if (!d) return;
  (void)cudaDeviceSynchronize(); /* nothing queued may still write what is freed */
  if (d->kcache) (void)cudaFree(d->kcache);
  if (d->vcache) (void)cudaFree(d->vcache);
  if (d->dlogits) (void)cudaFree(d->dlogits);
  free(d->lora);
  free(d->hlogits);
  free(d->hpos);
  free(d);
}

const qt_model_decoder_ext CUDA_DECODER = {cuda_decoder_feed, cuda_decoder_bytes, cuda_decoder_free};

}  // namespace

extern "C" qt_status qt_model_cuda_decoder_init(qt_model_cuda *c, const qt_model_cuda_lora *lora,
                                                size_t n_lora, double scale, int64_t cap,
                                                int64_t max_rows, qt_model_decoder **out) {
  QT_ASSERT(c && out && (lora || n_lora == 0));
  *out = NULL;
  const qt_model *m = c->m;
  if (cap < 1 || cap > m->cfg.max_position_embeddings || max_rows < 1 || max_rows > cap ||
      max_rows > c->max_N)
    return qt_fail(QT_ERR_INVALID, "model_cuda: a decoder of %lld positions, %lld rows per feed, over "
                                   "a context of %lld tokens (max_position_embeddings %lld)",
                   (long long)cap, (long long)max_rows, (long long)c->max_N,
                   (long long)m->cfg.max_position_embeddings);
  for (size_t i = 0; i < n_lora; i++)
    if (lora[i].r < 1 || lora[i].r > c->max_r || !lora[i].A || !lora[i].B)
      return qt_fail(QT_ERR_INVALID, "model_cuda: decoder LoRA entry %zu is not a valid adapted linear", i);
  cuda_decoder *d = (cuda_decoder *)calloc(1, sizeof *d);
  if (!d) return qt_fail(QT_ERR_NOMEM, "model_cuda: cannot allocate a decoder");
  d->c = c;
  d->cap = cap;
  d->n_lora = n_lora;
  d->lora = (qt_model_cuda_lora *)calloc(n_lora ? n_lora : 1, sizeof *d->lora);
  d->hlogits = (uint16_t *)malloc((size_t)m->V * sizeof(uint16_t));
  d->hpos = (int32_t *)malloc((size_t)max_rows * sizeof(int32_t));
  qt_status s = d->lora && d->hlogits && d->hpos ? QT_OK
                                                 : qt_fail(QT_ERR_NOMEM, "model_cuda: cannot allocate a decoder");
  if (s == QT_OK) {
    for (size_t i = 0; i < n_lora; i++) { /* eval mode: no dropout, no gradients */
      d->lora[i] = lora[i];
      d->lora[i].dropout = false;
      d->lora[i].dA = d->lora[i].dB = NULL;
      d->lora[i].dev_A = d->lora[i].dev_B = NULL;
      d->lora[i].dev_dA = d->lora[i].dev_dB = NULL;
    }
    c->scale = scale;
    s = bind_lora(c, d->lora, n_lora, false); /* once: the context serves only this decoder */
  }
  if (s == QT_OK) {
    size_t kv = (size_t)(m->L * cap * c->KD) * sizeof(uint16_t), lg = (size_t)c->V * sizeof(uint16_t);
    cudaError_t e = cudaMalloc((void **)&d->kcache, kv);
    if (e == cudaSuccess) e = cudaMalloc((void **)&d->vcache, kv);
    if (e == cudaSuccess) e = cudaMalloc((void **)&d->dlogits, lg);
    if (e != cudaSuccess)
      s = qt_fail(QT_ERR_CUDA, "model_cuda: cannot allocate a KV cache of %lld positions (%.1f MiB): %s",
                  (long long)cap, 2.0 * (double)kv / 1048576.0, cudaGetErrorString(e));
    d->bytes = 2 * kv + lg;
  }
  if (s != QT_OK) {
    cuda_decoder_free(d);
    return s;
  }
  return qt_model_decoder_wrap(m, cap, max_rows, &CUDA_DECODER, d, out);
}
