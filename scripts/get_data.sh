#!/usr/bin/env bash
# Make sure Fashion-MNIST (Debian package dataset-fashion-mnist) is on this machine. Never downloads
# anything else; says exactly what to do when it cannot install the package itself.
set -u
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/t10k-images-idx3-ubyte.gz" ] && [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ -n "${RINGLET_DATA:-}" ] && [ -f "$RINGLET_DATA/fashion-mnist/t10k-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing the Debian package dataset-fashion-mnist ..."
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }
  [ -f "$DIR/t10k-images-idx3-ubyte.gz" ] && exit 0
fi
cat >&2 <<MSG
Fashion-MNIST is missing. Install it with:
    sudo apt-get install -y dataset-fashion-mnist
or put the four files {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz in \$RINGLET_DATA/fashion-mnist/
MSG
exit 1
