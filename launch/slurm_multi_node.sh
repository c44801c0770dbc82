#!/usr/bin/env bash
# Multi-node launch under SLURM: one task per node, each starting accelerate for its local GPUs.
# Pick it for runs that need more than one machine (with launch/multi_node_zero3.yaml).
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_multi_node.sh recipe=NAME key=value ...
# Without SLURM, run on every node (R = 0 .. nodes-1, HOST = node 0):
#   ACCELERATE_USE_DEEPSPEED=true ACCELERATE_DEEPSPEED_CONFIG_FILE=launch/ds_zero3.json \
#   torchrun --nnodes=2 --node_rank=R --nproc_per_node=8 --master_addr=HOST --master_port=29500 align/train.py recipe=NAME
# The run folder (log.run_dir) must be on a file system every node sees: each rank writes its shards.
set -euo pipefail
export ALIGN_HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export ALIGN_GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
export ALIGN_PORT=${ALIGN_PORT:-29500}
# Arguments pass through "$@" untouched (recipe overrides may hold brackets, commas, spaces).
srun --kill-on-bad-exit=1 bash -c '
  align launch --config_file launch/multi_node_zero3.yaml \
    --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * ALIGN_GPUS_PER_NODE)) \
    --machine_rank "$SLURM_NODEID" --main_process_ip "$ALIGN_HEAD_NODE" --main_process_port "$ALIGN_PORT" \
    align/train.py "$@"' align "$@"
