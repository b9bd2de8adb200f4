package io.blkstack.scenario;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import java.util.List;
import java.util.function.Consumer;

/**
 * One seed reproduction (issue 7): a stack and workload built only from blkstack's real
 * components, run once under the old design ({@code legacy} policies) and once or more under the
 * fixed one. Only the policy switches differ between the runs; the workload, the memory budget and
 * the faults are the same.
 *
 * <p>A scenario names the resource its seed document names (a bio set, a snapshot's pending
 * exception, the bounce pool, ...), and the tests assert that the checker's wait-for knot of the
 * legacy finding mentions it. New scenarios (thin provisioning: {@code bufio-shrinker},
 * {@code split-worker}) implement this interface and add themselves to {@link ScenarioRegistry}.
 */
public interface Scenario {

    /** How the workload is driven: the deterministic checker or real threads. */
    enum Engine {
        SIM, THREADS;

        /** The name users type. */
        public String key() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /**
     * One policy setting of a scenario.
     *
     * @param label the row label ({@code legacy}, {@code fixed}, {@code fixed:in-flight}, ...)
     * @param policies the switches for the run
     * @param legacy whether this is the old design
     * @param expectFinding whether the checker is expected to find a deadlock or livelock (the old
     *     design; also a partial fix that the checker shows to be insufficient)
     * @param note what the variant shows, one line
     */
    record Variant(String label, Policies policies, boolean legacy, boolean expectFinding, String note) {

        /** Checks the label. */
        public Variant {
            if (label == null || label.isBlank()) {
                throw new IllegalArgumentException("a variant needs a label: '" + label + "'");
            }
        }
    }

    /** The scenario's command-line name, such as {@code bioset-rescuer}. */
    String name();

    /** The seed document's number, such as {@code 000}. */
    String seed();

    /** One line: what the scenario builds. */
    String description();

    /** The old design's policies. */
    Policies legacyPolicies();

    /** The fixed designs: the first is the scenario's {@code fixed} row, the others extra rows. */
    List<Variant> fixedVariants();

    /** The workload for an engine; it builds the stack from real components, runs it and tears it down. */
    Consumer<Kernel> workload(Engine engine, Probe probe);

    /** The page arena for both engines. */
    long memoryBytes();

    /** The simulated faults ({@code SimFaults.Spec} syntax), empty for none. */
    String faults();

    /** The faults of the threads engine (real threads take no simulated faults); none by default. */
    default io.blkstack.kernel.Faults threadsFaults() {
        return io.blkstack.kernel.Faults.NONE;
    }

    /** A phrase the legacy knot must contain: the resource the seed names. */
    String seedResource();

    /** The legacy variant followed by the fixed ones. */
    default List<Variant> variants() {
        List<Variant> all = new java.util.ArrayList<>();
        all.add(new Variant("legacy", legacyPolicies(), true, true, "the old design: " + legacyPolicies().describe()));
        all.addAll(fixedVariants());
        return List.copyOf(all);
    }
}
