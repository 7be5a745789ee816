# Shared by the stand-ins in this folder: test-only, used by xtask/tests/flash.rs (see its module doc).
# STANDIN_ROOT: the sandbox that plays the board's /etc and /var; every call is appended to
# $STANDIN_ROOT/calls.log so the test can check what the deploy asked the system to do.
: "${STANDIN_ROOT:?the board stand-ins need STANDIN_ROOT}"

record() {
    printf '%s\n' "$*" >>"$STANDIN_ROOT/calls.log"
}

# The sandboxed location of a system path: /etc and /var live under STANDIN_ROOT.
board_path() {
    case "$1" in
        /etc/* | /var/*) printf '%s%s' "$STANDIN_ROOT" "$1" ;;
        *) printf '%s' "$1" ;;
    esac
}
