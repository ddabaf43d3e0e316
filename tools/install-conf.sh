#!/bin/sh
# install-conf.sh SRC DEST: copies the default configuration files from SRC
# into DEST (below $DESTDIR) where they do not exist yet.
set -eu
src=$1
dest=${DESTDIR:-}$2
cd "$src"
find . -type f -name '*.cf' | while read -r f; do
        target=$dest/${f#./}
        if [ ! -e "$target" ]; then
                install -D -m 0644 "$f" "$target"
                echo "Installing default $target"
        fi
done
