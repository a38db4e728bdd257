#!/bin/bash
# pgha watchdog: the process body that fences a primary whose agent died or froze.
#
# Usage: watchdog.sh [VIP-CIDR INTERFACE]
#
# The agent writes lines on our stdin:
#   arm PID MS [START]  PostgreSQL (postmaster PID) must be fenced unless another line comes within
#                MS milliseconds (the agent sends what is left before its lease may end, less a
#                margin).  START is the postmaster's start time (/proc/PID/stat field 22): with it,
#                a pid whose postmaster exited and whose number was reused is never fenced.
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
armed_start=
armed_ms=
armed_at=
armed_until=

say() { printf 'pgha watchdog: %s\n' "$*" >&2; }

# REPLY := the start time of process $1 (field 22 of its stat); fails when it is gone.
start_of() {
    local stat
    local -a fields
    { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
    read -r -a fields <<< "${stat##*)}"
    REPLY=${fields[19]-}
}

# REPLY := milliseconds since boot, from /proc/uptime: a clock no one can set (10 ms steps).
uptime_ms() {
    local up rest
    read -r up rest < /proc/uptime
    REPLY=$(( 10#${up/./} * 10 ))
}

fence() {
    local pm=$1 start=$2 f stat child
    local -a fields
    if [[ -n $start ]] && { ! start_of "$pm" || [[ $REPLY != "$start" ]]; }; then
        say "pid $pm is not the postmaster it was armed for (it exited; the pid may be reused): nothing to kill"
        drop_vip
        return
    fi
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
    drop_vip
}

drop_vip() {
    if [[ -n $vip_cidr ]]; then
        if ip -4 addr del "$vip_cidr" dev "$vip_dev" 2>/dev/null; then
            say "removed the VIP $vip_cidr from $vip_dev"
        fi
    fi
}

while :; do
    if [[ -n $armed ]]; then
        uptime_ms
        left=$((armed_until - REPLY))
        if ((left <= 0)); then
            say "deadline passed, fencing PostgreSQL (pid $armed): no word from the agent for" \
                "$((REPLY - armed_at)) ms since it armed with $armed_ms ms"
            fence "$armed" "$armed_start"
            armed=
            continue
        fi
        printf -v timeout '%d.%03d' $((left / 1000)) $((left % 1000))
        IFS=' ' read -r -t "$timeout" cmd pid ms start
    else
        IFS=' ' read -r cmd pid ms start
    fi
    rc=$?
    if ((rc > 128)); then
        continue  # timed out (or interrupted): the top of the loop checks the deadline
    elif ((rc != 0)); then
        if [[ -n $armed ]]; then
            say "agent gone while primary, fencing PostgreSQL (pid $armed)"
            fence "$armed" "$armed_start"
        fi
        exit 0
    fi
    case $cmd in
        arm)
            [[ $pid =~ ^[0-9]+$ && $ms =~ ^-?[0-9]+$ && $start =~ ^[0-9]*$ ]] || continue
            if ((ms <= 0)); then
                say "deadline passed, fencing PostgreSQL (pid $pid): the agent armed with $ms ms"
                fence "$pid" "$start"
                armed=
            else
                uptime_ms
                armed=$pid
                armed_start=$start
                armed_ms=$ms
                armed_at=$REPLY
                armed_until=$((REPLY + ms))
            fi
            ;;
        disarm)
            armed=
            ;;
    esac
done
