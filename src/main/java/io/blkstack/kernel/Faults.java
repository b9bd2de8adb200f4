package io.blkstack.kernel;

/**
 * Fault injection hooks. Components ask at named fault sites; the real kernel answers "no fault",
 * the simulator answers from its seeded stream.
 *
 * <p>Site names: {@code alloc:<pool or allocator>} for a non-blocking allocation attempt,
 * {@code worker-create} for creating a workqueue worker, {@code io:<device>} for a device I/O
 * error, {@code latency:<device>} for extra device latency.
 */
public interface Faults {

    /** No faults at all. */
    Faults NONE = new Faults() {
        @Override
        public boolean shouldFail(String site) {
            return false;
        }

        @Override
        public long extraLatencyNanos(String site) {
            return 0;
        }
    };

    /** Whether the operation at {@code site} fails this time. */
    boolean shouldFail(String site);

    /** Extra latency to add at {@code site}, in nanoseconds. */
    long extraLatencyNanos(String site);
}
