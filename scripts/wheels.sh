# Sourced by the scripts that run on a lent GPU machine, from the repository root: that machine has no
# network, so the packages shardplan needs beyond torch travel as wheels in .whl/ and are installed
# into /tmp/site. Where .whl/ is absent, install shardplan first (README).
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
