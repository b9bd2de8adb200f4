package io.blkstack.sim;

import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Reserves;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Everything that, with a seed, determines a simulated run: memory budget, policies, strategy,
 * faults and the limits that end a run. Immutable; build with {@link #builder}.
 */
public final class SimConfig {

    private final long memoryBytes;
    private final Policies policies;
    private final Reserves reserves;
    private final StrategySpec strategy;
    private final SimFaults.Spec faults;
    private final boolean faultsAtSetup;
    private final long maxSteps;
    private final long maxVirtualNanos;
    private final long uncontrolledBlockingNanos;
    private final int livelockRounds;
    private final int stallJumpsMax;
    private final long stuckWaitNanosMax;
    private final long pctStepBound;
    private final Path traceFile;
    private final boolean ownCarrier;
    private final List<Knot.WaitDescriber> describers;

    private SimConfig(Builder b) {
        this.memoryBytes = b.memoryBytes;
        this.policies = b.policies;
        this.reserves = b.reserves;
        this.strategy = b.strategy;
        this.faults = b.faults;
        this.faultsAtSetup = b.faultsAtSetup;
        this.maxSteps = b.maxSteps;
        this.maxVirtualNanos = b.maxVirtualNanos;
        this.uncontrolledBlockingNanos = b.uncontrolledBlockingNanos;
        this.livelockRounds = b.livelockRounds;
        this.stallJumpsMax = b.stallJumpsMax;
        this.stuckWaitNanosMax = b.stuckWaitNanosMax;
        this.pctStepBound = b.pctStepBound;
        this.traceFile = b.traceFile;
        this.ownCarrier = b.ownCarrier;
        this.describers = List.copyOf(b.describers);
    }

    /** Starts a configuration with the defaults: 1 MiB, default policies, random walk, no faults. */
    public static Builder builder() {
        return new Builder();
    }

    public long memoryBytes() {
        return memoryBytes;
    }

    public Policies policies() {
        return policies;
    }

    /** The reserve sizes of the run's kernel (a configuration's {@code reserves:}). */
    public Reserves reserves() {
        return reserves;
    }

    public StrategySpec strategy() {
        return strategy;
    }

    public SimFaults.Spec faults() {
        return faults;
    }

    /**
     * Whether faults fire while a workload builds its stack (a phase it marks with
     * {@link SimFaults#setupBegins}). True by default, so fault sweeps reach construction; {@code
     * blkstack check} turns it off unless {@code --faults-at-setup}, so that a run's faults hit the
     * stack's operation and a failure to build is not reported as a crash.
     */
    public boolean faultsAtSetup() {
        return faultsAtSetup;
    }

    /** Scheduling steps after which a run ends as {@link Outcome#STEP_LIMIT}. */
    public long maxSteps() {
        return maxSteps;
    }

    /** Virtual time after which a run ends as {@link Outcome#TIME_LIMIT}. */
    public long maxVirtualNanos() {
        return maxVirtualNanos;
    }

    /** Real time a task may run without reaching a scheduling point. */
    public long uncontrolledBlockingNanos() {
        return uncontrolledBlockingNanos;
    }

    /** How many timed retries of every retrying task, with nothing changing, make a livelock. */
    public int livelockRounds() {
        return livelockRounds;
    }

    /** How many time jumps with only kernel timers firing and nothing changing make a livelock. */
    public int stallJumpsMax() {
        return stallJumpsMax;
    }

    /**
     * Virtual time after which, when nothing can run, a state in which no task that owes work has
     * left its wait is a livelock even though timers keep changing other state (periodic work,
     * nested retries): the stall the fingerprint comparison cannot see. 10 minutes by default, far
     * beyond every timeout in the kernel (mempool retry 5 s, thin no-space 60 s).
     */
    public long stuckWaitNanosMax() {
        return stuckWaitNanosMax;
    }

    /** A fixed PCT decision bound (for replays), or 0 to learn it from earlier runs. */
    public long pctStepBound() {
        return pctStepBound;
    }

    /** Where to write the trace as JSON lines, or null. */
    public Path traceFile() {
        return traceFile;
    }

    /**
     * Whether each run's virtual threads get a carrier thread of the run's own (true by default,
     * where the JDK lets us; see {@link SimCarrier}) or share the JDK's carrier pool. Either way the
     * runs and their traces are the same; only the speed differs.
     */
    public boolean ownCarrier() {
        return ownCarrier;
    }

    /** Extra describers of wait targets for explanations (later layers add theirs). */
    public List<Knot.WaitDescriber> describers() {
        return describers;
    }

    /** A copy with a different trace file (replays write one). */
    public SimConfig withTraceFile(Path file) {
        return toBuilder().traceFile(file).build();
    }

    /** A copy with a fixed PCT decision bound. */
    public SimConfig withPctStepBound(long bound) {
        return toBuilder().pctStepBound(bound).build();
    }

    /** A builder holding this configuration. */
    public Builder toBuilder() {
        Builder b = new Builder();
        b.memoryBytes = memoryBytes;
        b.policies = policies;
        b.reserves = reserves;
        b.strategy = strategy;
        b.faults = faults;
        b.faultsAtSetup = faultsAtSetup;
        b.maxSteps = maxSteps;
        b.maxVirtualNanos = maxVirtualNanos;
        b.uncontrolledBlockingNanos = uncontrolledBlockingNanos;
        b.livelockRounds = livelockRounds;
        b.stallJumpsMax = stallJumpsMax;
        b.stuckWaitNanosMax = stuckWaitNanosMax;
        b.pctStepBound = pctStepBound;
        b.traceFile = traceFile;
        b.ownCarrier = ownCarrier;
        b.describers.addAll(describers);
        return b;
    }

    /** Builds a {@link SimConfig}; every setter checks its argument. */
    public static final class Builder {
        private long memoryBytes = 1L << 20;
        private Policies policies = Policies.defaults();
        private Reserves reserves = Reserves.DEFAULTS;
        private StrategySpec strategy = StrategySpec.parse("random");
        private SimFaults.Spec faults = SimFaults.Spec.NONE;
        private boolean faultsAtSetup = true;
        private long maxSteps = 1_000_000;
        private long maxVirtualNanos = 24L * 3600 * 1_000_000_000L;
        private long uncontrolledBlockingNanos = 10_000_000_000L;
        private int livelockRounds = 3;
        private int stallJumpsMax = 16;
        private long stuckWaitNanosMax = 600_000_000_000L;
        private long pctStepBound;
        private Path traceFile;
        private boolean ownCarrier = true;
        private final List<Knot.WaitDescriber> describers = new ArrayList<>();

        public Builder memory(long bytes) {
            if (bytes < 4096) {
                throw new IllegalArgumentException("simulated memory must be at least one page: " + bytes + " bytes");
            }
            this.memoryBytes = bytes;
            return this;
        }

        public Builder reserves(Reserves value) {
            if (value == null) {
                throw new IllegalArgumentException("reserves: null");
            }
            this.reserves = value;
            return this;
        }

        public Builder policies(Policies value) {
            this.policies = value;
            return this;
        }

        public Builder strategy(String spec) {
            this.strategy = StrategySpec.parse(spec);
            return this;
        }

        public Builder faults(String spec) {
            this.faults = SimFaults.Spec.parse(spec);
            return this;
        }

        public Builder faultsAtSetup(boolean value) {
            this.faultsAtSetup = value;
            return this;
        }

        public Builder maxSteps(long value) {
            if (value <= 0) {
                throw new IllegalArgumentException("step limit must be positive: " + value);
            }
            this.maxSteps = value;
            return this;
        }

        public Builder maxVirtualNanos(long value) {
            if (value <= 0) {
                throw new IllegalArgumentException("virtual time limit must be positive: " + value + " ns");
            }
            this.maxVirtualNanos = value;
            return this;
        }

        public Builder uncontrolledBlockingNanos(long value) {
            if (value <= 0) {
                throw new IllegalArgumentException("uncontrolled-blocking bound must be positive: " + value + " ns");
            }
            this.uncontrolledBlockingNanos = value;
            return this;
        }

        public Builder livelockRounds(int value) {
            if (value < 1) {
                throw new IllegalArgumentException("livelock rounds must be at least 1: " + value);
            }
            this.livelockRounds = value;
            return this;
        }

        public Builder stallJumpsMax(int value) {
            if (value < 1) {
                throw new IllegalArgumentException("stall jumps must be at least 1: " + value);
            }
            this.stallJumpsMax = value;
            return this;
        }

        public Builder stuckWaitNanosMax(long value) {
            if (value <= 0) {
                throw new IllegalArgumentException("stuck-wait bound must be positive: " + value + " ns");
            }
            this.stuckWaitNanosMax = value;
            return this;
        }

        public Builder pctStepBound(long value) {
            if (value < 0) {
                throw new IllegalArgumentException("PCT step bound must not be negative: " + value);
            }
            this.pctStepBound = value;
            return this;
        }

        public Builder traceFile(Path file) {
            this.traceFile = file;
            return this;
        }

        /** See {@link SimConfig#ownCarrier()}. */
        public Builder ownCarrier(boolean value) {
            this.ownCarrier = value;
            return this;
        }

        public Builder describer(Knot.WaitDescriber describer) {
            this.describers.add(describer);
            return this;
        }

        public SimConfig build() {
            return new SimConfig(this);
        }
    }
}
