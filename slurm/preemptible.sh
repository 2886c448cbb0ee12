# Preemption for hpcrl's sbatch scripts: sourced by them, not submitted itself.
#
# run_preemptible CMD...   runs CMD (srun, mpiexec or hpcrl itself) in the
#     background and waits for it. When the batch shell gets Slurm's warning
#     signal (USR1 or TERM: `#SBATCH --signal=B:USR1@SECONDS`, or
#     `scancel --signal=USR1 --batch JOB`), it passes USR1 on to CMD; srun and
#     MPICH's mpiexec forward it to every rank, the hpcrl driver finishes its
#     step, writes a checkpoint and exits with HPCRL_PREEMPTED_EXIT_CODE (75).
#     On that code the job requeues itself (`scontrol requeue`, needs
#     `#SBATCH --requeue`); on any other code it returns that code, so a
#     finished or failed run does not requeue.
# resume_args              prints `--resume` when this is a requeued run
#     (SLURM_RESTART_COUNT > 0), nothing on the first run.

HPCRL_PREEMPTED_EXIT_CODE=75

run_preemptible() {
    "$@" &
    local pid=$! code
    trap 'echo "hpcrl: warning signal: checkpointing before the job ends"; kill -USR1 "$pid" 2>/dev/null' USR1 TERM
    # A trapped signal interrupts `wait`; wait again until the command has ended.
    wait "$pid"
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
    wait "$pid"
    code=$?
    trap - USR1 TERM
    if [ "$code" -eq "$HPCRL_PREEMPTED_EXIT_CODE" ]; then
        echo "hpcrl: checkpoint written; requeueing job ${SLURM_JOB_ID}"
        scontrol requeue "${SLURM_JOB_ID}"
    fi
    return "$code"
}

resume_args() {
    if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
        echo "--resume"
    fi
}
