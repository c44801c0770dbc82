#!/usr/bin/env bash
# Multi-node launch under SLURM: one task per node, each starting accelerate for its local GPUs.
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_multi_node.sh recipe=NAME key=value ...
# Without SLURM, run on every node:
#   torchrun --nnodes=2 --node_rank=R --nproc_per_node=8 --master_addr=HOST --master_port=29500 align/train.py recipe=NAME
set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
gpus_per_node=${SLURM_GPUS_ON_NODE:-8}
srun --kill-on-bad-exit=1 bash -c "
  accelerate launch --config_file launch/multi_node_zero3.yaml \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * gpus_per_node)) \
    --machine_rank \$SLURM_NODEID --main_process_ip $head_node --main_process_port 29500 \
    align/train.py $*"
