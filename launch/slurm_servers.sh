#!/usr/bin/env bash
# Training nodes plus rollout nodes under SLURM: the first ALIGN_ROLLOUT_NODES nodes of the job run
# one vLLM rollout server per GPU (`python -m align serve`), the other nodes train with accelerate
# + DeepSpeed ZeRO-3 (launch/multi_node_zero3.yaml) and sample from those servers
# (rollout.engine=server; rank r samples from server r mod N, so give at least as many training
# GPUs as server GPUs).
#   ALIGN_ROLLOUT_NODES=1 sbatch --nodes=3 --ntasks-per-node=1 --gpus-per-node=8 \
#     launch/slurm_servers.sh MODEL recipe=NAME key=value ...
# MODEL is what the servers load; the recipe's model.name must be the same checkpoint.
# The servers accept weight updates from the network (vLLM's API key does not guard those routes):
# run this only on a cluster network you trust. Not run on a real cluster yet: the pieces are
# tested on one machine (tests/rollout/test_server.py), this script only with `bash -n`.
set -euo pipefail
MODEL=$1
shift
ROLLOUT_NODES=${ALIGN_ROLLOUT_NODES:?set ALIGN_ROLLOUT_NODES to the number of rollout nodes}
GPUS=${SLURM_GPUS_ON_NODE:-8}
PORT0=${ALIGN_SERVER_PORT:-8000}
mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
TRAIN_NODES=$((${#NODES[@]} - ROLLOUT_NODES))
if [ "$TRAIN_NODES" -lt 1 ]; then
  echo "slurm_servers.sh: ${#NODES[@]} nodes, ${ROLLOUT_NODES} for rollouts: none left to train" >&2
  exit 2
fi
ROLLOUT_LIST=$(IFS=,; echo "${NODES[*]:0:ROLLOUT_NODES}")
TRAIN_LIST=$(IFS=,; echo "${NODES[*]:ROLLOUT_NODES}")
HEAD=${NODES[$ROLLOUT_NODES]}

# One server per GPU of each rollout node, in the background for the whole job.
srun --nodes="$ROLLOUT_NODES" --nodelist="$ROLLOUT_LIST" --ntasks-per-node="$GPUS" --gpus-per-task=1 --kill-on-bad-exit=1 \
  bash -c 'python -m align serve --model "$0" --host "$(hostname)" --port $(('"$PORT0"' + SLURM_LOCALID)) \
           --allow-remote-weight-updates' "$MODEL" &
SERVERS=()
for node in "${NODES[@]:0:ROLLOUT_NODES}"; do
  for ((i = 0; i < GPUS; i++)); do SERVERS+=("http://${node}:$((PORT0 + i))"); done
done
for url in "${SERVERS[@]}"; do  # every server answers before training starts
  until curl -sf "$url/health" > /dev/null; do sleep 5; done
done
SERVER_LIST=$(IFS=,; echo "${SERVERS[*]}")

# One task per training node: within this step SLURM_PROCID is the node's index (SLURM_NODEID
# would count the rollout nodes too).
srun --nodes="$TRAIN_NODES" --nodelist="$TRAIN_LIST" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c '
  align launch --config_file launch/multi_node_zero3.yaml \
    --num_machines '"$TRAIN_NODES"' --num_processes $(('"$TRAIN_NODES"' * '"$GPUS"')) \
    --machine_rank "$SLURM_PROCID" --main_process_ip "'"$HEAD"'" --main_process_port 29500 \
    align/train.py rollout.engine=server "rollout.servers=['"$SERVER_LIST"']" "$@"' align "$@"
kill %1 2> /dev/null || true
