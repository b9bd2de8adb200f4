package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Fault injection from the run's seeded stream: rules, swarm mode, coverage counts. */
class SimFaultsTest {

    private static SimFaults faults(String spec, long seed) {
        return new SimFaults(SimFaults.Spec.parse(spec), new SimRandom(seed), new SimTrace(null));
    }

    // Proves "fail the n-th attempt": exactly the third attempt at the site fails, other sites are
    // untouched, and attempts and fires are counted per site.
    @Test
    void nthAttemptFailsExactlyOnce() {
        SimFaults f = faults("alloc:x@3", 1);
        boolean[] seen = new boolean[5];
        for (int i = 0; i < 5; i++) {
            seen[i] = f.shouldFail("alloc:x");
        }
        assertFalse(f.shouldFail("alloc:y"));
        assertTrue(seen[2]);
        assertEquals(1, f.fires().get("alloc:x"));
        assertEquals(5, f.attempts().get("alloc:x"));
        assertEquals(0, f.fires().get("alloc:y"));
        assertFalse(seen[0] || seen[1] || seen[3] || seen[4]);
    }

    // Proves probabilities come from the seeded stream: about half of 2,000 attempts fail at p=0.5,
    // and the same seed gives the same sequence of decisions.
    @Test
    void probabilityIsSeededAndReproducible() {
        SimFaults a = faults("alloc:*=0.5", 9);
        SimFaults b = faults("alloc:*=0.5", 9);
        int fails = 0;
        for (int i = 0; i < 2000; i++) {
            boolean x = a.shouldFail("alloc:pages");
            assertEquals(x, b.shouldFail("alloc:pages"), "attempt " + i);
            fails += x ? 1 : 0;
        }
        assertTrue(fails > 800 && fails < 1200, "fails " + fails);
        assertFalse(a.shouldFail("worker-create"), "the prefix rule must not match other sites");
    }

    // Proves swarm mode: each run enables half of the rules, and different seeds enable different halves.
    @Test
    void swarmEnablesARandomHalf() {
        Set<List<String>> subsets = new HashSet<>();
        for (int seed = 0; seed < 20; seed++) {
            SimFaults f = faults("alloc:a=1,alloc:b=1,worker-create=1,io:d=1,swarm", seed);
            assertEquals(2, f.enabledSites().size());
            subsets.add(f.enabledSites().stream().sorted().toList());
        }
        assertTrue(subsets.size() >= 3, "subsets " + subsets);
    }

    // Proves extra latency: with probability 1 every ask adds a latency within the bound.
    @Test
    void latencyStaysWithinItsBound() {
        SimFaults f = faults("latency:dev=1.0/5ms", 4);
        for (int i = 0; i < 100; i++) {
            long extra = f.extraLatencyNanos("latency:dev");
            assertTrue(extra >= 0 && extra <= 5_000_000, "extra " + extra);
        }
        assertEquals(0, f.extraLatencyNanos("latency:other"));
        assertEquals(100, f.fires().get("latency:dev"));
    }

    // Proves bad specifications are rejected with the bad value in the message.
    @Test
    void badSpecsAreRejected() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SimFaults.Spec.parse("alloc:x=2"));
        assertTrue(e.getMessage().contains("2.0"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> SimFaults.Spec.parse("alloc:x@0"));
        assertThrows(IllegalArgumentException.class, () -> SimFaults.Spec.parse("latency:d=0.5"));
        assertThrows(IllegalArgumentException.class, () -> SimFaults.Spec.parse("nonsense"));
    }

    // Proves faults reach the kernel in a run: with every non-blocking pool attempt failing, a task's
    // allocations use the reserve, the site's fires are counted in the result, and the run is clean.
    @Test
    void faultsDriveAReserveInARun() {
        SimConfig config = SimConfig.builder().faults("alloc:p=1.0").build();
        SimResult r = new SimRunner(config).runOnce(5, k -> {
            Mempool<Object> pool = new Mempool<>(k, "p", 1, new Mempool.Allocator<>() {
                @Override
                public Object alloc(int gfp) {
                    return new Object();
                }

                @Override
                public void free(Object element) {
                }
            });
            k.spawn("user", TaskKind.USER, () -> {
                for (int i = 0; i < 3; i++) {
                    pool.free(pool.alloc(Gfp.NOIO));
                }
            });
        });
        assertEquals(Outcome.OK, r.outcome(), r.explanation());
        assertEquals(3, r.faultFires().get("alloc:p"));
        assertEquals(3, r.counters().get("mempool.reserve-used"));
    }

    // Proves "swarm" alone stands for the default fault set (it used to thin an empty list and inject
    // nothing): the spec has the default set's rules, its description names them, and over 20 seeds
    // each run enables half of them and some run fails a non-blocking allocation.
    @Test
    void swarmAloneUsesTheDefaultSet() {
        SimFaults.Spec spec = SimFaults.Spec.parse("swarm");
        assertFalse(spec.isEmpty());
        assertEquals(SimFaults.Spec.DEFAULT_SET + "," + SimFaults.Spec.REMOTE_SET, spec.ruleText());
        assertTrue(spec.describe().contains(SimFaults.Spec.DEFAULT_SET), spec.describe());
        int rules = SimFaults.Spec.DEFAULT_SET.split(",").length;
        long allocFires = 0;
        for (int seed = 0; seed < 20; seed++) {
            SimFaults f = faults("swarm", seed);
            assertEquals((rules + 1) / 2, f.enabledSites().size());
            for (int i = 0; i < 200; i++) {
                f.shouldFail("alloc:pages");
            }
            allocFires += f.fires().get("alloc:pages");
        }
        assertTrue(allocFires > 0, "swarm alone never failed an allocation");
        assertEquals("alloc:x=0.5", SimFaults.Spec.parse("swarm,alloc:x=0.5").ruleText(),
                "swarm with rules thins those rules only");
    }

    // Proves faults are held off while a stack is built unless allowed at set-up: with a rule that
    // always fails, a run whose workload marks its set-up sees no failure and no attempt counted
    // inside it and a failure right after it; with faults allowed at set-up the same attempt fails.
    @Test
    void faultsAreOffDuringSetUpUnlessAllowed() {
        for (boolean atSetup : new boolean[] {false, true}) {
            boolean[] inside = new boolean[1];
            boolean[] after = new boolean[1];
            SimConfig config = SimConfig.builder().faults("alloc:x=1").faultsAtSetup(atSetup).build();
            SimResult r = new SimRunner(config).runOnce(5, k -> {
                SimFaults.setupBegins(k);
                inside[0] = k.faults().shouldFail("alloc:x");
                SimFaults.setupEnds(k);
                after[0] = k.faults().shouldFail("alloc:x");
            });
            assertEquals(Outcome.OK, r.outcome(), r.explanation());
            assertEquals(atSetup, inside[0], "at set-up, faults allowed: " + atSetup);
            assertTrue(after[0], "after set-up the rule must fire");
            assertEquals(atSetup ? 2L : 1L, r.faultFires().get("alloc:x"));
        }
    }
}
