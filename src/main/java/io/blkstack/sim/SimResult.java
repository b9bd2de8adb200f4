package io.blkstack.sim;

import java.util.Map;

/**
 * What one simulated run did: how it ended, the explanation of a finding, the trace hash that a
 * replay must reproduce, and the numbers a campaign sums up.
 *
 * @param seed the run's seed
 * @param outcome how it ended
 * @param explanation the wait-for knot and last events for a finding, empty for OK
 * @param traceHash the 64-bit hash of the run's event stream
 * @param events how many trace events there were
 * @param steps scheduling steps
 * @param decisions steps at which more than one task could run
 * @param virtualNanos the virtual clock at the end
 * @param pctStepBound the PCT decision bound the run used (0 for the random walk)
 * @param counters the kernel's counters at the end
 * @param faultFires how often each fault site fired
 * @param leakedThreads task threads that would not exit at teardown
 */
public record SimResult(long seed, Outcome outcome, String explanation, long traceHash, long events, long steps,
        long decisions, long virtualNanos, long pctStepBound, Map<String, Long> counters, Map<String, Long> faultFires,
        int leakedThreads) {

    /** Whether something was found. */
    public boolean isFinding() {
        return outcome.isFinding();
    }

    /** One line: outcome, seed, hash and sizes. */
    public String summary() {
        return outcome + " seed=" + seed + " hash=" + String.format("%016x", traceHash) + " steps=" + steps
                + " decisions=" + decisions + " virtual=" + virtualNanos + "ns";
    }
}
