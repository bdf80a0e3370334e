#!/usr/bin/env bash
# Benchmarks (JSON lines on stdout):
#   kernels   compression kernels against a memory copy (one thread)
#   hooks     every comm hook on a 25M-float gradient on shared memory (4
#             ranks) and on a simulated network (scripts/netsim; root only):
#             4 and 2 ranks at 1 Gbit/s, 4 at 10 Gbit/s, against raw
#             MPI_Allreduce in the same run
#   comm      allreduce and DDP step overhead on 2 and 4 local MPI ranks, and
#             Gloo allreduce under torchrun (2 processes)
#   adaptive  Fashion-MNIST on 4 ranks over a simulated 1 Gbit/s network
#             (scripts/netsim; root only), uniform against L-GreCo-adaptive
#             PowerSGD, top-k and QSGD (the example's JSON line per run;
#             last_epoch_* fields: after the decisions)
#   optimizers  Fashion-MNIST on 4 ranks over a simulated 1 Gbit/s network,
#             Adam with an fp32 allreduce against the 1-bit optimizers
#             (last_epoch_*: the compression phase)
#   optim8bit the 8-bit optimizers' step time and state bytes against
#             torch::optim's fp32 ones at 1M, 10M and 50M parameters
#   qat       fake-quantization kernels against a memory copy and ATen's
#             fake_quantize ops; a QAT layer's step against the fp32 layer;
#             DKM's attention-map bytes with and without eDKM's uniquification
#   sparsity  N:M and magnitude mask kernels against a memory copy and ATen;
#             the compressed N:M bytes; Sparsifier::Step against Adam's step
#   blas      the examples' speed with each BLAS Debian offers LibTorch, same
#             run: the reference BLAS (before), OpenBLAS serial, pthread (its
#             own thread pool, default size) and OpenMP (follows --threads;
#             what the set-up selects): GPT tiny and small (tokens/s) and
#             Fashion-MNIST (images/s), 4 ranks x 1 thread
#   peers     lowbit against PyTorch DDP (Debian's python3-torch, Gloo) on the
#             GPT example, 4 ranks, on shared memory and 10 Gbit/s, 1 Gbit/s
#             and 100 Mbit/s through scripts/netsim (root only): step time,
#             time to a target validation loss, ratios (scripts/peers_bench.py;
#             LOWBIT_PEERS_ARGS adds its flags). Not in the default list: it
#             takes about an hour.
# With no argument all of them run (but peers); otherwise the named ones.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ "${1:-}" = --torch2 ]; then  # against LibTorch 2.x (scripts/common.sh)
  LOWBIT_TORCH=2
  shift
fi
lowbit_setup
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(kernels hooks comm adaptive optimizers optim8bit qat sparsity blas)
for part in "${parts[@]}"; do
  case "$part" in
    kernels)
      "$LOWBIT_BUILD/bench/compress_kernel_bench" ;;
    peers)
      read -r -a peer_args <<<"${LOWBIT_PEERS_ARGS:-}"
      /usr/bin/python3 "$LOWBIT_ROOT/scripts/peers_bench.py" --python "$LOWBIT_PYTHON" \
        --gpt "$LOWBIT_BUILD/examples/gpt/gpt" --fashion "$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" \
        "${peer_args[@]}" ;;
    qat)
      "$LOWBIT_BUILD/bench/qat_bench" ;;
    sparsity)
      "$LOWBIT_BUILD/bench/sparsity_bench" ;;
    optim8bit)
      "$LOWBIT_BUILD/bench/optim8bit_bench" --sizes "${LOWBIT_BENCH_OPTIM_SIZES:-1000000,10000000,50000000}" ;;
    hooks)
      # Shared memory first: the hooks' compute alone, for reference.
      OMP_NUM_THREADS=1 "${LOWBIT_MPIRUN[@]}" -np 4 "$LOWBIT_BUILD/bench/hook_bench" \
        --floats "${LOWBIT_BENCH_FLOATS:-25000000}"
      for run in 4:1gbit 2:1gbit 4:10gbit; do
        OMP_NUM_THREADS=1 timeout 1200 "$LOWBIT_ROOT/scripts/netsim" --ranks "${run%%:*}" --rate "${run#*:}" -- \
          "$LOWBIT_BUILD/bench/hook_bench" --floats "${LOWBIT_BENCH_FLOATS:-25000000}" --network "${run#*:}" 2>&1 |
          grep -o '{.*}' || echo "{\"bench\":\"hook\",\"network\":\"${run#*:}\",\"ranks\":${run%%:*},\"status\":\"failed or timed out\"}"
      done ;;
    comm)
      for n in 2 4; do
        "${LOWBIT_MPIRUN[@]}" -np "$n" "$LOWBIT_BUILD/bench/allreduce_bench"
        "${LOWBIT_MPIRUN[@]}" -np "$n" "$LOWBIT_BUILD/bench/ddp_bench"
      done
      # Gloo as torchrun jobs use it, with no MPI in the process.
      "$LOWBIT_PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 --redirects 1 --tee 1 --no_python \
        "$LOWBIT_BUILD/bench/allreduce_bench" --max_log2 24 2>&1 | grep -o '{.*}' ;;
    adaptive)
      runs=("powersgd|--hook powersgd --rank 4" "adaptive_powersgd|--hook adaptive_powersgd --rank 4"
        "topk|--hook topk --density 0.01 --warmup_steps 0 --min_compress_numel 1024" "adaptive_topk|--hook adaptive_topk --density 0.01 --min_compress_numel 1024"
        "qsgd|--hook qsgd --bits 4" "adaptive_qsgd|--hook adaptive_qsgd --bits 4 --adapt_alpha 3")
      for run in "${runs[@]}"; do
        read -r -a flags <<<"${run#*|}"
        line=$(OMP_NUM_THREADS=1 "$LOWBIT_ROOT/scripts/netsim" --ranks 4 --rate 1gbit -- \
          "$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" --epochs 3 --optimizer sgd --lr 0.05 "${flags[@]}" 2>&1 |
          grep -o '{"example".*}')
        echo "{\"label\":\"${run%%|*}\",\"network\":\"1gbit\",${line#\{}"
      done ;;
    optimizers)
      runs=("adam|--optimizer adam" "onebit_adam|--optimizer onebit_adam --freeze_step 200"
        "zeroone_adam|--optimizer zeroone_adam --freeze_step 200 --local_step_scaler 200 --local_step_clipper 2 --onebit_block 1024"
        "onebit_lamb|--optimizer onebit_lamb --lr 1e-2 --freeze_step 100")
      for run in "${runs[@]}"; do
        read -r -a flags <<<"${run#*|}"
        line=$(OMP_NUM_THREADS=1 "$LOWBIT_ROOT/scripts/netsim" --ranks 4 --rate 1gbit -- \
          "$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist" --epochs 3 "${flags[@]}" 2>&1 |
          grep -o '{"example".*}')
        echo "{\"label\":\"${run%%|*}\",\"network\":\"1gbit\",${line#\{}"
      done ;;
    blas)
      libdir=/usr/lib/x86_64-linux-gnu
      workloads=("gpt_tiny|tokens_per_second|$LOWBIT_BUILD/examples/gpt/gpt --steps 20 --eval_interval 20 --val_windows 64 --sample_chars 0"
        "gpt_small|tokens_per_second|$LOWBIT_BUILD/examples/gpt/gpt --preset small --batch_size 4 --steps 5 --eval_interval 5 --val_windows 16 --sample_chars 0"
        "fashion_mnist|images_per_second|$LOWBIT_BUILD/examples/fashion_mnist/fashion_mnist --epochs 1 --max_train_examples 8192")
      for blas in blas openblas-serial openblas-pthread openblas-openmp; do
        [ -f "$libdir/$blas/libblas.so.3" ] || { echo "bench.sh: $libdir/$blas missing, skipped" >&2; continue; }
        for w in "${workloads[@]}"; do
          IFS='|' read -r name key cmd <<<"$w"
          read -r -a argv <<<"$cmd"
          line=$(LD_LIBRARY_PATH="$libdir/$blas" timeout 900 "${LOWBIT_MPIRUN[@]}" -x LD_LIBRARY_PATH -np 4 "${argv[@]}" |
            grep -o '{"example".*}')
          value=$(grep -o "\"$key\":[0-9.e+]*" <<<"$line" | cut -d: -f2)
          echo "{\"bench\":\"blas\",\"blas\":\"${blas/#blas/reference}\",\"workload\":\"$name\",\"ranks\":4,\"threads\":1,\"$key\":$value}"
        done
      done ;;
    *) echo "bench.sh: unknown part '$part' (kernels, hooks, comm, adaptive, optimizers, optim8bit, qat, sparsity, blas)" >&2; exit 2 ;;
  esac
done
