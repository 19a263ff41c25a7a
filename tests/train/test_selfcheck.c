/* The start-up self-check's comparison (train/backend.h qt_backend_selfcheck),
 * on the CPU: the CPU backend checked against itself passes with the same bits
 * (NMSE 0, equal losses: the tape is deterministic), and a gradient made wrong
 * on the checked side fails with QT_ERR_NUMERIC naming that tensor and
 * suggesting training.device: cpu. On a machine with a GPU and a CUDA build,
 * the cuda backend is checked as well (the check users get at start-up). */
#include <stdio.h>
#include <string.h>

#ifdef QLORA_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "common/status.h"
#include "train/backend.h"

static int failures;

static void check(int cond, const char *what) {
  if (!cond) {
    fprintf(stderr, "FAIL: %s\n", what);
    failures++;
  }
}

int main(void) {
  qt_selfcheck_result res;
  qt_status r = qt_backend_selfcheck(QT_BACKEND_CPU, &res);
  if (r != QT_OK) fprintf(stderr, "cpu vs cpu: %s\n", qt_error_message());
  check(r == QT_OK && !res.failed, "the cpu backend passes against itself");
  check(res.worst_nmse == 0 && res.all_nmse == 0 && res.loss_rel == 0 && res.eval_rel == 0,
        "the cpu backend against itself: the same bits");
  check(res.acc[1] > 0, "the gradients are not all zero");
  check(res.norm_rel == 0 && res.update_nmse == 0, "the optimizer step against itself: the same bits");
  check(res.decode_nmse == 0, "the decoder against itself: the same logits");
  printf("cpu vs cpu: %.3f s, loss rel %.3g, worst NMSE %.3g\n", res.seconds, res.loss_rel, res.worst_nmse);

  const char *victim = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight";
  r = qt_backend_selfcheck_ex(QT_BACKEND_CPU, victim, &res);
  check(r == QT_ERR_NUMERIC && res.failed, "a gradient off by half fails the check");
  const char *msg = qt_error_message();
  printf("perturbed: %s\n", msg);
  check(strstr(msg, victim) != NULL, "the message names the tensor that disagreed");
  check(strstr(msg, "training.device: cpu") != NULL, "the message suggests training.device: cpu");

  /* the layer-0 q_proj's B: another tensor, the same outcome */
  const char *victim2 = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
  r = qt_backend_selfcheck_ex(QT_BACKEND_CPU, victim2, &res);
  check(r == QT_ERR_NUMERIC && strstr(qt_error_message(), victim2) != NULL, "a lora_B gradient off by half fails");

  /* the optimizer step: twice the rate on the checked side */
  r = qt_backend_selfcheck_ex(QT_BACKEND_CPU, "optimizer", &res);
  printf("optimizer perturbed: %s\n", qt_error_message());
  check(r == QT_ERR_NUMERIC && strstr(qt_error_message(), "AdamW update") != NULL,
        "an update at twice the rate fails, naming the AdamW update");

#ifdef QLORA_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0) {
    r = qt_backend_selfcheck(QT_BACKEND_CUDA, &res);
    printf("cuda vs cpu: %s; %.3f s, loss rel %.3g, eval rel %.3g, worst NMSE %.3g, all NMSE %.3g, norm rel %.3g, "
           "update NMSE %.3g, decoder NMSE %.3g\n", r == QT_OK ? "passed" : qt_error_message(), res.seconds, res.loss_rel,
           res.eval_rel, res.worst_nmse, res.all_nmse, res.norm_rel, res.update_nmse, res.decode_nmse);
    check(r == QT_OK, "the cuda backend passes the self-check");
  } else {
    printf("no CUDA device: the cuda backend's check not run\n");
  }
#endif
  if (failures) fprintf(stderr, "%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
