#!/bin/bash
# pgha watchdog: the process body that fences a primary whose agent died or froze.
#
# Usage: watchdog.sh [VIP-CIDR INTERFACE]
#
# The agent writes lines on our stdin:
#   arm PID MS   PostgreSQL (postmaster PID) must be fenced unless another line comes within MS
#                milliseconds (the agent sends what is left before its lease may end, less a margin)
#   disarm       nothing to fence: wait without a deadline
# and we fence PID when the deadline passes (the agent froze, or cannot renew its lease), or when
# stdin closes while armed (the agent died).  Fencing: SIGSTOP the postmaster so it restarts
# nothing, SIGKILL each of its children, then it; then remove the VIP, if we were given one.
#
# A bash script, not Python: it must run for as long as the node does, and bash with only
# builtins (read -t, kill, /proc reads) keeps about 3 MB resident where an interpreter keeps 8.
# It runs nothing but `ip` (once, after fencing, to drop the VIP with the agent's CAP_NET_ADMIN).

trap '' INT TERM
vip_cidr=${1-}
vip_dev=${2-}
armed=
timeout=

say() { printf 'pgha watchdog: %s\n' "$*" >&2; }

fence() {
    local pm=$1 f stat child
    local -a fields
    kill -STOP "$pm" 2>/dev/null
    for f in /proc/[0-9]*/stat; do
        { read -r stat < "$f"; } 2>/dev/null || continue
        # The command may hold spaces and parentheses: the state and ppid follow the last ')'.
        read -r -a fields <<< "${stat##*)}"
        if [[ ${fields[1]-} == "$pm" ]]; then
            child=${f#/proc/}
            kill -KILL "${child%/stat}" 2>/dev/null
        fi
    done
    kill -KILL "$pm" 2>/dev/null
    kill -CONT "$pm" 2>/dev/null
    if [[ -n $vip_cidr ]]; then
        if ip -4 addr del "$vip_cidr" dev "$vip_dev" 2>/dev/null; then
            say "removed the VIP $vip_cidr from $vip_dev"
        fi
    fi
}

while :; do
    if [[ -n $armed ]]; then
        IFS=' ' read -r -t "$timeout" cmd pid ms
    else
        IFS=' ' read -r cmd pid ms
    fi
    rc=$?
    if ((rc > 128)); then
        say "deadline passed, fencing PostgreSQL (pid $armed)"
        fence "$armed"
        armed=
        continue
    elif ((rc != 0)); then
        if [[ -n $armed ]]; then
            say "agent gone while primary, fencing PostgreSQL (pid $armed)"
            fence "$armed"
        fi
        exit 0
    fi
    case $cmd in
        arm)
            [[ $pid =~ ^[0-9]+$ && $ms =~ ^-?[0-9]+$ ]] || continue
            if ((ms <= 0)); then
                say "deadline passed, fencing PostgreSQL (pid $pid)"
                fence "$pid"
                armed=
            else
                armed=$pid
                printf -v timeout '%d.%03d' $((ms / 1000)) $((ms % 1000))
            fi
            ;;
        disarm)
            armed=
            ;;
    esac
done
