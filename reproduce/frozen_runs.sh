#!/usr/bin/env bash
# Runs `make reproduce-cifar-fs`'s jobs from a frozen copy of the code (a git worktree at COMMIT with its
# own editable install over this checkout's .venv), so edits in this checkout never reach a job mid-run;
# every job's commits.txt then names COMMIT. The runs folder is this checkout's reproduce/runs.
#   reproduce/frozen_runs.sh COMMIT [JOB ...]      (default: every job, in the order below)
set -euo pipefail
commit=${1:?usage: reproduce/frozen_runs.sh COMMIT [JOB ...]}; shift
main=$(cd "$(dirname "$0")/.." && pwd)
tree=${FROZEN_TREE:-$main/../paper-tree}
venv=${FROZEN_VENV:-$main/../paper-venv}
# as the Makefile does: the shared data beside the checkout unless the caller names another folder
export DISTILSHOT_DATA=${DISTILSHOT_DATA:-$(cd "$main/.." && pwd)/shared/data}
jobs=${*:-pretrain generators refilled-convnet4 grdd skd bml scratch-mobilenet refilled-mobilenet}
if [ ! -d "$tree" ]; then
  git -C "$main" worktree add --detach "$tree" "$commit"
fi
[ "$(git -C "$tree" rev-parse HEAD)" = "$(git -C "$main" rev-parse "$commit")" ] || {
  echo "error: $tree is not at $commit" >&2; exit 2; }
if [ ! -x "$venv/bin/distilshot" ]; then
  base=$("$main/.venv/bin/python" -c 'import sys; print(sys.base_prefix)')
  "$base/bin/python3.11" -m venv "$venv"
  site="$venv/lib/python3.11/site-packages"
  # the checkout's packages (torch, onnx, ...) without its own editable install of distilshot
  echo "$main/.venv/lib/python3.11/site-packages" > "$site/checkout-venv.pth"
  rm -rf "$site"/setuptools* "$site"/_distutils_hack "$site"/distutils-precedence.pth  # use the pinned one
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$tree"
fi
rm -rf "$tree/reproduce/runs" && ln -s "$main/reproduce/runs" "$tree/reproduce/runs"
cd "$tree"
for job in $jobs; do
  echo "=== $job $(date)" >> reproduce/runs/paper-driver.log
  nice -n 10 "$venv/bin/python" reproduce/cifar_fs_paper.py --only "$job" >> reproduce/runs/paper-driver.log 2>&1
done
