#!/usr/bin/env bash
# End-to-end: 2 ranks x batch 32 (interrupted mid-epoch 1, resumed) vs 1 process x batch 64.
set -u
B=build/examples/cifar/anode-cifar
COMMON="--data data/cifar10-slice --network resnet --width 0.25 --epochs 2 --seed 3 --sync-bn --no-augment --threads 1 --workers 0 --no-progress --float64 --log-steps"
rm -rf runs/e2e/1p runs/e2e/2p
$B $COMMON --batch-size 64 --out runs/e2e/1p > runs/e2e/1p.txt 2>&1
setsid $B $COMMON --batch-size 32 --nproc-per-node 2 --out runs/e2e/2p > runs/e2e/2p-a.txt 2>&1 &
pid=$!
for i in $(seq 1 600); do grep -q "epoch 1 step 3 " runs/e2e/2p-a.txt && break; sleep 0.5; done
kill -INT -- -$pid
wait $pid; echo "interrupted run exit $?" >> runs/e2e/2p-a.txt
$B $COMMON --batch-size 32 --nproc-per-node 2 --out runs/e2e/2p --resume > runs/e2e/2p-b.txt 2>&1
echo "resumed run exit $?" >> runs/e2e/2p-b.txt
