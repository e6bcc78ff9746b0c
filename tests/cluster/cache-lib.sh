# Shared by build-tools.sh and build-node.sh (sourced after they set WANT=("name|dir|binaries"…)).

missing() { # missing <dir> <binaries...>: true if one is not built yet
    local dir=$1
    shift
    for b in "$@"; do [[ -x "$dir/$b" || ( -f "$dir/$b" && "$b" == *.yaml ) ]] || return 0; done
    return 1
}

# --where prints "binary=path" of every wanted binary; --check exits 1 if one is missing.
# Both exit; anything else returns and the script builds.
answer_queries() {
    if [[ "${1:-}" == "--where" ]]; then
        for w in "${WANT[@]}"; do
            IFS='|' read -r name dir bins <<<"$w"
            for b in $bins; do echo "$b=$dir/$b"; done
        done
        exit 0
    fi
    if [[ "${1:-}" == "--check" ]]; then
        local status=0
        for w in "${WANT[@]}"; do
            IFS='|' read -r name dir bins <<<"$w"
            # shellcheck disable=SC2086
            if missing "$dir" $bins; then echo "missing: $name ($dir)" >&2; status=1; fi
        done
        exit $status
    fi
}
