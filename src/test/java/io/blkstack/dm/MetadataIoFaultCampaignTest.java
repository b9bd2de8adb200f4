package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.BlockDevice;
import io.blkstack.bufio.BufferCache;
import io.blkstack.config.ConfigException;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.dm.thin.Pool;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimFaults;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import io.blkstack.sim.workload.Workload;
import io.blkstack.sim.workload.WorkloadSpec;
import io.blkstack.dm.thin.metadata.ThinMetadata;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiConsumer;
import org.junit.jupiter.api.Test;

/**
 * Errors on metadata I/O are survivable (issue 12, bullet 7): the {@code blkstack check} campaign
 * that found the buffer cache's failed-read bug, kept as a test.
 *
 * <p>What it proves: for a thin pool over a striped data device, a snapshot, and log-writes, each
 * under the default policies with the checker's default workload (3 tasks writing, reading back and
 * flushing, every read compared with a model), failing the N-th I/O of the metadata device (the
 * pool's metadata, the snapshot's COW device, the log device) for N = 1, 2, 3, ... ends every run
 * OK: no MISUSE (double free, leak), no CRASH, no STEP_LIMIT, no deadlock and no data mismatch.
 * An error while the stack is being built makes it refuse to start (the checker counts
 * {@code workload.stack-refused}); an error later leaves the target in its degraded mode (the pool
 * {@code ro} with {@code needs_check} set on the device, the snapshot {@code Invalid}, log-writes
 * stopped), and for the pool the metadata committed on the device still passes {@code thin check}
 * but for data blocks leaked by a provisioning the failure cut short. The pool is {@code ro} when
 * the workload ends, except after a failed write-back of a dirty metadata block, which no request
 * waits for: the pool hears of it from its next commit (as dm-thin hears of dm-bufio's
 * {@code async_write_error}), so the check first lets the periodic commit run.
 *
 * <p>How: N grows until a whole run goes by without the N-th I/O happening (the sweep is complete),
 * two schedules per N from fixed seeds; the post-run checks run on the simulated main task and
 * throw, so a violation is a CRASH finding with its message. Bounded: about 60 indices per stack.
 */
class MetadataIoFaultCampaignTest {

    /** More indices than any of these stacks does metadata I/O in one run: the sweep must end before. */
    private static final int INDEX_MAX = 400;
    private static final int SCHEDULES_PER_INDEX = 2;

    private static final String THIN = """
            memory: 4MiB
            devices:
              meta: { memory: 1MiB, latency: 50us }
              d0: { memory: 4MiB, latency: 50us }
              d1: { memory: 4MiB, latency: 50us }
            mapped:
              stripe: |
                0 16384 striped 2 128 d0 0 d1 0
              pool: |
                0 16384 thin-pool meta stripe 128 16
              vol: |
                0 16384 thin pool 0
            exports:
              default: { device: vol }
            """;

    private static final String SNAPSHOT = """
            memory: 4MiB
            devices:
              origin: { memory: 4MiB, latency: 50us }
              cow: { memory: 1MiB, latency: 50us }
            mapped:
              orig: |
                0 8192 snapshot-origin origin
              snap: |
                0 8192 snapshot origin cow P 16
            exports:
              default: { device: orig }
            """;

    private static final String LOG_WRITES = """
            memory: 4MiB
            devices:
              d: { memory: 4MiB, latency: 50us }
              log: { memory: 4MiB, latency: 50us }
            mapped:
              lw: |
                0 8192 log-writes d log
            exports:
              default: { device: lw }
            """;

    /** What one sweep saw. */
    private record Sweep(int indices, int refusedAtStart, int degraded, List<String> findings) {
    }

    @Test
    void thinPoolSurvivesAFailureOfEveryMetadataIo() {
        Sweep s = sweep("thin", THIN, "vol", "meta", (stack, kernel) -> {
            MappedDevice poolDevice = (MappedDevice) stack.device("pool");
            Pool pool = ((io.blkstack.dm.thin.ThinPoolTarget) poolDevice.table().targets().get(0)).pool();
            pool.drain();
            if (pool.mode() != Pool.Mode.READ_ONLY) {
                // Only a failed write-back of a dirty block (by the shrinker, say) reaches the pool
                // late: no request waits for it (it may even be in flight still), and the pool
                // hears of it from its next commit, as dm-thin hears of dm-bufio's
                // async_write_error. With no flush after it, that is the periodic commit, at most
                // one commit period after the change: wait for it.
                String before = String.join("\n", poolDevice.status(StatusForm.INFO));
                Task.current().sleepFor(2 * Pool.COMMIT_PERIOD_NANOS);
                pool.drain();
                if (kernel.counters().value("bufio.write-errors") == 0) {
                    throw new IllegalStateException("a metadata read or flush failed but the pool did not go read-only: "
                            + before);
                }
            }
            String status = String.join("\n", poolDevice.status(StatusForm.INFO));
            if (!status.contains(" ro ")) {
                throw new IllegalStateException("a metadata I/O failed but the pool is not read-only: " + status);
            }
            try (BufferCache cache = new BufferCache(stack.device("meta"), 4096)) {
                // A data block allocated, committed by a flush, but never mapped because the pool
                // failed before the insert is a leak, as after a crash in that window; anything
                // else is damage.
                ThinMetadata committed = ThinMetadata.open(cache, false);
                List<String> problems = committed.check().stream()
                        .filter(p -> !p.endsWith("but no mapping (leaked)")).toList();
                if (!problems.isEmpty()) {
                    throw new IllegalStateException("committed metadata damaged: " + problems);
                }
                if (!committed.needsCheck()) {
                    throw new IllegalStateException("the pool went read-only but needs_check is not set on the device");
                }
            }
        });
        assertEquals(List.of(), s.findings(), s.toString());
        assertTrue(s.indices() >= 12, "a thin run does at least a dozen metadata I/Os: " + s);
        assertTrue(s.refusedAtStart() > 0 && s.degraded() > 0, "both kinds of failure were exercised: " + s);
    }

    @Test
    void snapshotSurvivesAFailureOfEveryCowIo() {
        Sweep s = sweep("snapshot", SNAPSHOT, "orig", "cow", (stack, kernel) -> {
            String status = String.join("\n", ((MappedDevice) stack.device("snap")).status(StatusForm.INFO));
            if (!status.contains("Invalid")) {
                throw new IllegalStateException("a COW I/O failed but the snapshot is still valid: " + status);
            }
        });
        assertEquals(List.of(), s.findings(), s.toString());
        assertTrue(s.refusedAtStart() > 0 && s.degraded() > 0, "both kinds of failure were exercised: " + s);
    }

    @Test
    void logWritesSurvivesAFailureOfEveryLogIo() {
        Sweep s = sweep("log-writes", LOG_WRITES, "lw", "log", (stack, kernel) -> {
            MappedDevice lw = (MappedDevice) stack.device("lw");
            io.blkstack.dm.logwrites.LogWritesTarget t = (io.blkstack.dm.logwrites.LogWritesTarget) lw.table().targets().get(0);
            t.sync();
            if (t.isLogging()) {
                throw new IllegalStateException("a log I/O failed but log-writes is still logging: " + lw.status(StatusForm.INFO));
            }
        });
        assertEquals(List.of(), s.findings(), s.toString());
        assertTrue(s.degraded() > 0, "a failure after start was exercised: " + s);
    }

    /**
     * Fails I/O number 1, 2, ... of {@code faultDevice} until a run no longer reaches it; after each
     * run whose failure came after the stack was built, {@code degradedCheck} must hold.
     */
    private static Sweep sweep(String label, String yaml, String top, String faultDevice,
            BiConsumer<Stack, Kernel> degradedCheck) {
        StackConfig config;
        try {
            config = StackConfig.parse(label + ".yaml", yaml, Path.of("."));
        } catch (ConfigException e) {
            throw new AssertionError(e);
        }
        String site = "io:" + faultDevice;
        List<String> findings = new ArrayList<>();
        int refused = 0;
        int degraded = 0;
        for (int n = 1; n <= INDEX_MAX; n++) {
            SimRunner runner = new SimRunner(SimConfig.builder().memory(config.memoryBytes()).faults(site + "@" + n).build());
            boolean reached = false;
            for (int i = 0; i < SCHEDULES_PER_INDEX; i++) {
                long[] firesAtBuild = {-1};
                Stack[] built = {null};
                Workload.StackBuilder builder = kernel -> {
                    try {
                        built[0] = Stack.build(kernel, config, Stack.Mode.SERVE);
                    } catch (ConfigException | IOException e) {
                        throw new IllegalStateException(e.getMessage(), e);
                    }
                    firesAtBuild[0] = fires(kernel, site);
                    return built[0].device(top);
                };
                Workload workload = new Workload(builder, WorkloadSpec.defaults());
                SimResult r = runner.runOnce(0x5eed_0000L + 31L * n + i, kernel -> {
                    workload.accept(kernel);
                    if (built[0] != null && firesAtBuild[0] == 0 && fires(kernel, site) > 0) {
                        degradedCheck.accept(built[0], kernel);
                    }
                });
                long fired = r.faultFires().getOrDefault(site, 0L);
                reached |= fired > 0;
                if (r.outcome() != Outcome.OK) {
                    findings.add(label + " " + site + "@" + n + " seed " + r.seed() + ": " + r.outcome() + ": "
                            + firstLines(r.explanation(), 2));
                } else if (fired > 0 && r.counters().getOrDefault("workload.stack-refused", 0L) > 0) {
                    refused++;
                } else if (fired > 0) {
                    degraded++;
                }
            }
            if (!reached) {
                Sweep done = new Sweep(n - 1, refused, degraded, findings);
                System.out.println("metadata I/O fault sweep, " + label + ": " + done);
                return done;
            }
            if (findings.size() >= 5) {
                return new Sweep(n, refused, degraded, findings);
            }
        }
        throw new AssertionError(label + ": still reaching " + site + "@" + INDEX_MAX + "; the sweep is unbounded");
    }

    private static long fires(Kernel kernel, String site) {
        return ((SimFaults) kernel.faults()).fires().getOrDefault(site, 0L);
    }

    private static String firstLines(String text, int n) {
        String[] lines = text.split("\n");
        return String.join(" | ", java.util.Arrays.copyOf(lines, Math.min(n, lines.length)));
    }
}
