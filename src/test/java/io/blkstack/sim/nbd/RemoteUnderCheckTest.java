package io.blkstack.sim.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.config.StackConfig;
import io.blkstack.remote.ExportInfo;
import io.blkstack.remote.RemoteDevice;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import io.blkstack.sim.workload.ConfigStack;
import io.blkstack.sim.workload.Workload;
import io.blkstack.sim.workload.WorkloadSpec;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/**
 * The remote NBD client ({@link RemoteDevice}) under the checker, against {@link SimNbdServer}s
 * that drop connections (before a request is carried out, before its reply, mid-reply), crash and
 * lose unflushed writes, refuse reconnects and delay replies past the client's timeout.
 */
class RemoteUnderCheckTest {

    /** A striped device over two remote devices: a loss on either shows through (no mirror hides it). */
    static final String STRIPED = """
            memory: 4MiB
            devices:
              r0: { nbd: "nbd+unix:///d0?socket=/nonexistent/r0.sock", timeout: 10s, size: 64MiB }
              r1: { nbd: "nbd://storage1/d1", connections: 2, timeout: 5s, size: 64MiB }
            mapped:
              s0: |
                0 262144 striped 2 128 r0 0 r1 0
            exports:
              default: { device: s0 }
            """;
    /** Every operation, flushes often, in a small region. */
    static final String EVERY_OP = "tasks=3,ops=10,mix=write:40,read:30,flush:10,fua:5,discard:5,zeroes:5,"
            + "zeroes-nohole:5,size=4k-64k,region=0-1m,flushEvery=3";
    /** The mirror campaign's workload: the default mix, smaller, flushing every third operation. */
    static final String MIRROR_WORKLOAD = "tasks=2,ops=6,mix=write:60,read:30,flush:10,size=4k-64k,region=0-1m,flushEvery=3";
    /** The remote faults, often: most runs drop, crash and refuse. */
    static final String HEAVY = "nbd-drop:*=0.05,nbd-lose:*=0.5,nbd-refuse:*=0.5,latency:nbd:*=0.05/15s";

    private static Workload.DrivenStackBuilder stack(StackConfig config, String device, boolean lyingServers) {
        return ConfigStack.builder(config, List.of(new ConfigStack.Drive(device, false)), lyingServers);
    }

    private static long counter(SimRunner.CampaignResult c, String name) {
        return c.counters().getOrDefault(name, 0L);
    }

    // Proves issue 17's checker claim on examples/remote-mirror.yaml (a mirror over two remote
    // devices, two connections each): 300 schedules of a small workload under the default
    // policies and swarm over the default fault set, the simulated servers' faults included, end
    // OK: no acknowledged write lost, every flush honest, every wait ended, every bio and page back.
    // The counters show the remote faults fired and were survived: connections dropped and came
    // back, servers crashed, connects were refused, replies were delayed.
    @Test
    void remoteMirrorUnderSwarmHasNoFinding() throws Exception {
        StackConfig config = StackConfig.load(Path.of("examples/remote-mirror.yaml"));
        SimRunner runner = new SimRunner(SimConfig.builder().memory(4 << 20).faults("swarm").faultsAtSetup(false).build());
        int schedules = 300;
        SimRunner.CampaignResult c = runner.campaign(17, schedules, false, false,
                Workload.driving(stack(config, "m0", false), WorkloadSpec.parse(MIRROR_WORKLOAD)));
        assertEquals(Map.of(Outcome.OK, schedules), c.outcomes(),
                () -> c.firstFinding().summary() + "\n" + c.firstFinding().explanation());
        assertTrue(counter(c, "sim-nbd.drops") > 0, c.counters().toString());
        assertTrue(counter(c, "sim-nbd.crashes") > 0, c.counters().toString());
        assertTrue(counter(c, "sim-nbd.refusals") > 0, c.counters().toString());
        assertTrue(counter(c, "sim-nbd.delays") > 0, c.counters().toString());
        // Four connections per run to begin with; every connect beyond those is a reconnect.
        assertTrue(counter(c, "sim-nbd.connects") > 4L * schedules, c.counters().toString());
    }

    // Proves the loss rules on a stack where nothing hides a loss: striped over two remote devices,
    // every operation kind, remote faults in most runs. Servers lose acknowledged unflushed writes,
    // reads before the next flush see them gone (counted), the client fails that flush, and no read
    // after a good flush ever misses a write: 0 findings in 100 schedules.
    @Test
    void stripedOverTwoRemoteDevicesSurvivesLosses() throws Exception {
        StackConfig config = StackConfig.parse("striped.yaml", STRIPED, Path.of("/base"));
        SimRunner runner = new SimRunner(SimConfig.builder().memory(4 << 20).faults(HEAVY).faultsAtSetup(false).build());
        SimRunner.CampaignResult c = runner.campaign(5, 100, false, false,
                Workload.driving(stack(config, "s0", false), WorkloadSpec.parse(EVERY_OP)));
        assertEquals(Map.of(Outcome.OK, 100), c.outcomes(),
                () -> c.firstFinding().summary() + "\n" + c.firstFinding().explanation());
        assertTrue(counter(c, "sim-nbd.losses") > 0, c.counters().toString());
        assertTrue(counter(c, "workload.unflushed-lost-reads") > 0, c.counters().toString());
        assertTrue(counter(c, "workload.flush-failures") > 0, c.counters().toString());
    }

    // Proves the checker finds a flush that hides a loss: the same stack and faults over servers
    // that acknowledge FLUSH and FUA without making anything stable, so a crash loses writes the
    // client was told are durable. A read after that flush returns old data: DATA_MISMATCH, and the
    // seed replays to the same finding.
    @Test
    void lyingServersAreFound() throws Exception {
        StackConfig config = StackConfig.parse("striped.yaml", STRIPED, Path.of("/base"));
        SimRunner runner = new SimRunner(SimConfig.builder().memory(4 << 20).faults(HEAVY).faultsAtSetup(false).build());
        Workload workload = Workload.driving(stack(config, "s0", true), WorkloadSpec.parse(EVERY_OP));
        SimRunner.CampaignResult c = runner.campaign(5, 100, true, false, workload);
        SimResult first = c.firstFinding();
        assertNotNull(first, "no finding in " + c.schedules() + " schedules: " + c.counters());
        assertEquals(Outcome.DATA_MISMATCH, first.outcome(), first.explanation());
        assertTrue(first.explanation().contains("data mismatch on s0"), first.explanation());
        SimResult again = runner.runOnce(first.seed(), workload);
        assertEquals(first.outcome(), again.outcome());
        assertEquals(first.traceHash(), again.traceHash());
    }

    // Proves the simulated server speaks what the remote client asks for: through a real handshake
    // the device gets structured replies, base:allocation, the server's block sizes (so it splits
    // to 128 KiB) and FLUSH, FUA, TRIM, WRITE_ZEROES and multi-conn (so it opens both connections).
    @Test
    void handshakeNegotiatesWhatTheClientAsksFor() throws Exception {
        StackConfig config = StackConfig.parse("striped.yaml", STRIPED, Path.of("/base"));
        AtomicReference<ExportInfo> info = new AtomicReference<>();
        AtomicReference<Integer> connections = new AtomicReference<>();
        SimResult r = new SimRunner(SimConfig.builder().memory(4 << 20).build()).runOnce(1, kernel -> {
            ConfigStack s = (ConfigStack) stack(config, "s0", false).build(kernel);
            RemoteDevice r1 = (RemoteDevice) s.stack().device("r1");
            info.set(r1.exportInfo());
            r1.awaitConnected(1_000_000_000L);
            connections.set(r1.connectionsUp());
        });
        assertEquals(Outcome.OK, r.outcome(), r.explanation());
        ExportInfo i = info.get();
        assertTrue(i.structuredReplies(), i.describe());
        assertTrue(i.allocationContextId() >= 0, i.describe());
        assertEquals(64L << 20, i.sizeBytes());
        assertEquals(SimNbdServer.BLOCK_MIN, i.minBlockSize());
        assertEquals(SimNbdServer.PAYLOAD_MAX, i.maxPayload());
        for (int flag : new int[] {FLAG_SEND_FLUSH, FLAG_SEND_FUA, FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES,
            FLAG_CAN_MULTI_CONN}) {
            assertTrue(i.has(flag), "flag " + flag + ": " + i.describe());
        }
        assertEquals(2, connections.get());
    }
}
