# Shared by the scripts: where the Python virtual environment lives.
# Outside the work tree, so every clone (and CI's fresh clone) reuses one environment instead of
# reinstalling packages each time. Override with KVD_VENV.
KVD_VENV=${KVD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kvd/venv}
KVD_PYTHON="$KVD_VENV/bin/python"

# Stops a script that needs the environment before it exists.
require_venv() {
  if [ ! -x "$KVD_PYTHON" ]; then
    echo "no Python environment at $KVD_VENV; run scripts/install-deps.sh first" >&2
    exit 1
  fi
}
