#!/bin/bash
# MedViLL pretraining on several GPU nodes under Slurm: one torchrun per node, c10d rendezvous
# on the first node. Submit from the project root (the shards, negatives and tokenizer must be
# on a filesystem every node sees):
#
#   sbatch --nodes 2 scripts/slurm_pretrain.sh mimic_cxr          # 2 nodes × 8 GPUs
#   sbatch --nodes 2 scripts/slurm_pretrain.sh mimic_cxr --resume # continue after a preemption
#
# The batch plan (micro-batch × ranks × accumulation = pretrain.profiles.paper.train.
# global_batch_size) is derived from the world size and printed by rank 0; 16 GPUs give
# 8 × 16 × 1 for the paper's 128. A resume needs the same number of GPUs and workers.
#SBATCH --job-name=medvill-pretrain
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --output=logs/%x-%j.out

set -euo pipefail
DATASET=${1:?usage: sbatch scripts/slurm_pretrain.sh <dataset> [medvill pretrain options]}
shift
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RDZV_PORT=${RDZV_PORT:-29500}
mkdir -p logs

# NCCL reports why a collective failed (a rank that crashed, a bad interface) instead of
# only timing out; the trainer's own timeout is train.ddp_timeout_s.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
export OMP_NUM_THREADS=1

srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_JOB_NUM_NODES" \
    --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-id "$SLURM_JOB_ID" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$HEAD_NODE:$RDZV_PORT" \
    -m medvill.cli pretrain --dataset "$DATASET" --profile paper "$@"
