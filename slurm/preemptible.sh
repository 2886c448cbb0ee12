# Preemption and requeue for hpcrl's sbatch scripts: sourced by them, not submitted itself.
#
# requeue_on_failure_option ARGS...   takes `--requeue-on-failure N` (or
#     `--requeue-on-failure=N`) out of the script's arguments, into
#     HPCRL_MAX_REQUEUES, and leaves the others in the array HPCRL_ARGS:
#         requeue_on_failure_option "$@" || exit 2
#         set -- ${HPCRL_ARGS[@]+"${HPCRL_ARGS[@]}"}
#     Without the option, HPCRL_MAX_REQUEUES keeps its value from the
#     environment (`sbatch --export=ALL,HPCRL_MAX_REQUEUES=3 ...`), default 0.
# run_preemptible CMD...   runs CMD (srun, mpiexec or hpcrl itself) in the
#     background and waits for it. When the batch shell gets Slurm's warning
#     signal (USR1 or TERM: `#SBATCH --signal=B:USR1@SECONDS`, or
#     `scancel --signal=USR1 --batch JOB`), it passes USR1 on to CMD; srun and
#     MPICH's mpiexec forward it to every rank, the hpcrl driver finishes its
#     step, writes a checkpoint and exits with HPCRL_PREEMPTED_EXIT_CODE (75).
#     On that code the job requeues itself (`scontrol requeue`, needs
#     `#SBATCH --requeue`). On another non-zero code (a crash, a killed rank)
#     it requeues only while fewer than HPCRL_MAX_REQUEUES requeues after a
#     failure have happened in this job (counted in
#     $SLURM_SUBMIT_DIR/.hpcrl-failures-$SLURM_JOB_ID), and never on code 2, a
#     usage error that would fail the same way again, nor after a signal
#     (`scancel` sends TERM: the job is meant to end). A run that finishes
#     does not requeue. It returns CMD's code.
#     In a requeued run it first removes, on every node, the shared-memory
#     segments that MPICH leaves in /dev/shm when a run is killed: they are
#     named after the job and step ids, which the requeued run uses again, and
#     its MPI_Init would wait on them for ever.
# resume_args              prints `--resume` when this is a requeued run
#     (SLURM_RESTART_COUNT > 0), nothing on the first run: a requeued run goes
#     on from its newest checkpoint.

HPCRL_PREEMPTED_EXIT_CODE=75
HPCRL_USAGE_EXIT_CODE=2

requeue_on_failure_option() {
    HPCRL_ARGS=()
    while [ "$#" -gt 0 ]; do
        case "$1" in
        --requeue-on-failure)
            if [ "$#" -lt 2 ]; then
                echo "hpcrl: --requeue-on-failure needs the most requeues after failures, e.g. --requeue-on-failure 3" >&2
                return 2
            fi
            HPCRL_MAX_REQUEUES=$2
            shift 2
            ;;
        --requeue-on-failure=*)
            HPCRL_MAX_REQUEUES=${1#*=}
            shift
            ;;
        *)
            HPCRL_ARGS+=("$1")
            shift
            ;;
        esac
    done
    HPCRL_MAX_REQUEUES=${HPCRL_MAX_REQUEUES:-0}
    case "$HPCRL_MAX_REQUEUES" in
    '' | *[!0-9]*)
        echo "hpcrl: --requeue-on-failure (HPCRL_MAX_REQUEUES) must be a whole number of requeues, got '$HPCRL_MAX_REQUEUES'" >&2
        return 2
        ;;
    esac
}

run_preemptible() {
    if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
        remove_stale_mpich_segments
    fi
    "$@" &
    local pid=$! code signalled=0
    trap 'signalled=1; echo "hpcrl: warning signal: checkpointing before the job ends"; kill -USR1 "$pid" 2>/dev/null' USR1 TERM
    # A trapped signal interrupts `wait`; wait again until the command has ended.
    wait "$pid"
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
    wait "$pid"
    code=$?
    trap - USR1 TERM
    if [ "$code" -eq "$HPCRL_PREEMPTED_EXIT_CODE" ]; then
        echo "hpcrl: checkpoint written; requeueing job ${SLURM_JOB_ID}"
        scontrol requeue "${SLURM_JOB_ID}"
    elif [ "$code" -ne 0 ] && [ "$signalled" -eq 0 ] && requeue_after_failure "$code"; then
        :
    else  # the job ends with this run
        rm -f "$(failures_file)"
    fi
    return "$code"
}

# Requeues the job after a run that failed with exit code $1 if --requeue-on-failure
# allows another requeue (status 0), else says why not (status 1).
requeue_after_failure() {
    local code=$1 max=${HPCRL_MAX_REQUEUES:-0} file failures
    file=$(failures_file)
    failures=$(cat "$file" 2>/dev/null || echo 0)
    if [ "$max" -eq 0 ]; then
        return 1
    elif [ "$code" -eq "$HPCRL_USAGE_EXIT_CODE" ]; then
        echo "hpcrl: exit code $code, a usage error: not requeueing (it would fail the same way)" >&2
        return 1
    elif [ "$failures" -ge "$max" ]; then
        echo "hpcrl: exit code $code; not requeueing job ${SLURM_JOB_ID}: it was requeued" \
            "after a failure $failures time(s) already, the most --requeue-on-failure $max allows" >&2
        return 1
    fi
    failures=$((failures + 1))
    echo "$failures" >"$file"
    echo "hpcrl: exit code $code; requeueing job ${SLURM_JOB_ID} to resume from its newest" \
        "checkpoint (requeue $failures of at most $max after failures)"
    scontrol requeue "${SLURM_JOB_ID}"
}

failures_file() {
    echo "${SLURM_SUBMIT_DIR:-.}/.hpcrl-failures-${SLURM_JOB_ID}"
}

# MPICH 4 under srun names a step's segments /dev/shm/mpich_{shm,vci}_<FNV-1a hash
# of "JOBID.STEPID">_<node>; the first steps of a requeued run are the first
# steps of the killed one again. Removes those of steps 0-15 on every node.
remove_stale_mpich_segments() {
    local step patterns=()
    command -v srun >/dev/null || return 0
    for step in $(seq 0 15); do
        local name="${SLURM_JOB_ID}.${step}" hash=2166136261 i char
        for ((i = 0; i < ${#name}; i++)); do
            printf -v char '%d' "'${name:i:1}"
            hash=$(((hash ^ char) * 16777619 & 0xFFFFFFFF))
        done
        printf -v hash '%x' "$hash"
        patterns+=("/dev/shm/mpich_shm_${hash}_*" "/dev/shm/mpich_vci_${hash}_*")
    done
    srun --ntasks="${SLURM_JOB_NUM_NODES:-1}" --ntasks-per-node=1 --overlap \
        bash -c 'rm -f -- $*' remove-stale-mpich-segments "${patterns[@]}"
}

resume_args() {
    if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
        echo "--resume"
    fi
}
