package io.blkstack.control;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.block.TestKernel;
import io.blkstack.config.Stack;
import io.blkstack.config.StackConfig;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.nbd.ExportStats;
import io.blkstack.nbd.NbdServer;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Live reloads under fio {@code verify=crc32c} (fio's nbd engine) on one export: 100 reloads of
 * its linear table between two equivalent tables, then 20 reloads of the striped device under it
 * between two chunk sizes; every fio run verifies clean, and the export answered no request with
 * an error.
 *
 * <p><b>The stack.</b> The export serves {@code top}, a linear device over {@code st}, a striped
 * device over two memory legs {@code a} and {@code b}:
 * <ul>
 *   <li>{@code top} alternates between {@code 0 N linear st 0} and the same mapping cut in two
 *       lines at N/2 (a line boundary that fio's 24 KiB blocks straddle);
 *   <li>{@code st} alternates between {@code striped 2 64 a 0 b 0} (32 KiB chunks) and
 *       {@code striped 2 128 m0 0 m1 0} (64 KiB chunks). Changing a striped table's chunk size
 *       changes where every sector lives, so the second table stripes over two linear devices
 *       {@code m0}, {@code m1} whose tables (one 64-sector line per 32 KiB, generated below) send
 *       each sector exactly where the first table puts it on {@code a} and {@code b}. Both are
 *       real striped tables that split bios at their own chunk boundaries (every 64 or 128
 *       sectors, which the 48-sector fio blocks cross), and both map every sector of {@code st} to
 *       the same sector of {@code a} or {@code b}, so the data fio wrote stays where it reads it.
 * </ul>
 *
 * <p><b>Under I/O, without timing.</b> fio runs again and again (each run writes the export at
 * random 16 deep, then reads it all back against crc32c and stops at the first mismatch) until
 * the reloads are done. After each reload the test waits (bounded polling) until the export
 * answered more requests than fio keeps in flight, so every reload is followed by I/O through the
 * new table and no two reloads happen with no I/O between them.
 */
class ReloadUnderFioTest {

    private static final long N = 65536;
    private static final long CHUNK_SMALL = 64;
    private static final long CHUNK_LARGE = 128;
    private static final int LINEAR_RELOADS = 100;
    private static final int STRIPED_RELOADS = 20;
    /** Requests answered after a reload before the next one: more than fio's queue depth (16). */
    private static final long REQUESTS_BETWEEN_RELOADS = 17;
    /** Bound on the wait for those requests (fio restarting between runs takes well under this). */
    private static final long PROGRESS_NANOS_MAX = TimeUnit.SECONDS.toNanos(60);
    private static final long FIO_SECONDS_MAX = 120;
    /** Interval of the progress poll. */
    private static final long POLL_NANOS = 200_000;

    @TempDir
    Path tmp;

    @Test
    @Timeout(300)
    void reloadsOfLinearAndStripedTablesUnderFioVerifyLoseNothing() throws Exception {
        assumeTrue(Programs.installed("fio"), "fio is not installed");
        StackConfig config = StackConfig.parse("reload.yaml", yaml(), tmp);
        try (TestKernel tk = new TestKernel("reload-fio", config.memoryBytes(), Policies.defaults(), Faults.NONE);
                Stack stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE)) {
            NbdServer server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            server.start();
            LiveStack live = new LiveStack(tk.kernel, stack, server, config, 5_000_000_000L, line -> { });
            ControlServer control = ControlServer.start(config.controlPath(), live, line -> { });
            try {
                run(server, config.controlPath());
            } finally {
                control.close();
                server.close();
            }
        }
    }

    /**
     * The generated leg tables do what the class comment claims: for every sector of {@code st},
     * the large-chunk striping over {@code m0}, {@code m1} ends on the same device and sector as
     * the small-chunk striping over {@code a}, {@code b} (computed from the two dm-stripe formulas,
     * not from the targets), and together the legs cover {@code a} and {@code b} exactly once.
     */
    @Test
    void legTablesGiveTheSmallChunkLayout() {
        List<List<String>> legs = List.of(legTable(0), legTable(1));
        java.util.Set<String> covered = new java.util.HashSet<>();
        for (long x = 0; x < N; x++) {
            long small = x / CHUNK_SMALL;
            String want = (small % 2 == 0 ? "a" : "b") + " " + ((small / 2) * CHUNK_SMALL + x % CHUNK_SMALL);
            long large = x / CHUNK_LARGE;
            long y = (large / 2) * CHUNK_LARGE + x % CHUNK_LARGE;
            String[] line = legs.get((int) (large % 2)).get((int) (y / CHUNK_SMALL)).split(" ");
            assertEquals(y - y % CHUNK_SMALL, Long.parseLong(line[0]), "line of leg sector " + y);
            String got = line[3] + " " + (Long.parseLong(line[4]) + y % CHUNK_SMALL);
            assertEquals(want, got, "sector " + x);
            assertTrue(covered.add(got), "sector " + got + " mapped twice");
        }
        assertEquals(N, covered.size());
    }

    private void run(NbdServer server, Path socket) throws Exception {
        String uri = "nbd://127.0.0.1:" + server.localAddress().getPort() + "/top";
        AtomicBoolean reloadsDone = new AtomicBoolean();
        List<String> fioOutputs = new CopyOnWriteArrayList<>();
        List<Throwable> fioFailures = new CopyOnWriteArrayList<>();
        Thread fio = new Thread(() -> {
            try {
                do {
                    fioOutputs.add(Programs.run(tmp, FIO_SECONDS_MAX, "fio", "--name=reload", "--ioengine=nbd",
                            "--uri=" + uri, "--rw=randwrite", "--bs=24k", "--size=24m", "--verify=crc32c",
                            "--iodepth=16", "--do_verify=1", "--verify_fatal=1", "--randrepeat=1"));
                } while (!reloadsDone.get());
            } catch (Throwable e) {
                fioFailures.add(e);
            }
        }, "fio-loop");
        fio.start();
        ExportStats stats = server.exportStats("top");
        try (ControlClient client = new ControlClient(socket, 60_000_000_000L)) {
            String whole = "0 " + N + " linear st 0\n";
            String halves = "0 " + N / 2 + " linear st 0\n" + N / 2 + " " + N / 2 + " linear st " + N / 2 + "\n";
            for (int i = 0; i < LINEAR_RELOADS; i++) {
                reload(client, "top", i % 2 == 0 ? halves : whole);
                awaitProgress(stats, fio, fioFailures);
            }
            String small = "0 " + N + " striped 2 " + CHUNK_SMALL + " a 0 b 0\n";
            String large = "0 " + N + " striped 2 " + CHUNK_LARGE + " m0 0 m1 0\n";
            for (int i = 0; i < STRIPED_RELOADS; i++) {
                reload(client, "st", i % 2 == 0 ? large : small);
                awaitProgress(stats, fio, fioFailures);
            }
        } finally {
            reloadsDone.set(true);
            fio.join(TimeUnit.SECONDS.toMillis(FIO_SECONDS_MAX + 30));
        }
        assertFalse(fio.isAlive(), "fio finished");
        assertEquals(List.of(), fioFailures, "every fio run exits 0 (verify_fatal: a mismatch fails it)");
        assertFalse(fioOutputs.isEmpty());
        for (String out : fioOutputs) {
            assertTrue(out.contains("err= 0"), "fio reported errors:\n" + out);
            assertFalse(out.toLowerCase().contains("verify: bad") || out.contains("verify failed"), out);
            assertTrue(out.contains("READ:") && out.contains("WRITE:"), "fio wrote, then read back:\n" + out);
        }
        ExportStats.Snapshot s = stats.snapshot();
        for (ExportStats.Error error : ExportStats.Error.values()) {
            assertEquals(0, s.errors(error), "no request of the export failed with " + error);
        }
    }

    private static void reload(ControlClient client, String device, String table) throws Exception {
        ControlClient.Reply r = client.send("POST", "/v1/devices/" + device + "/reload",
                new ControlApi.TableRequest(table, null));
        assertEquals(200, r.status(), device + ": " + r.body());
    }

    /** Waits until the export answered {@link #REQUESTS_BETWEEN_RELOADS} more requests (fio keeps going). */
    private static void awaitProgress(ExportStats stats, Thread fio, List<Throwable> fioFailures) {
        long from = answered(stats);
        long deadline = System.nanoTime() + PROGRESS_NANOS_MAX;
        while (answered(stats) - from < REQUESTS_BETWEEN_RELOADS) {
            if (!fio.isAlive() || !fioFailures.isEmpty()) {
                fail("fio stopped while the reloads went on: " + fioFailures);
            }
            if (System.nanoTime() > deadline) {
                fail("no progress of fio within " + TimeUnit.NANOSECONDS.toSeconds(PROGRESS_NANOS_MAX) + " s");
            }
            LockSupport.parkNanos(POLL_NANOS);
        }
    }

    private static long answered(ExportStats stats) {
        ExportStats.Snapshot s = stats.snapshot();
        return s.requests(ExportStats.Command.READ) + s.requests(ExportStats.Command.WRITE);
    }

    /**
     * The configuration: legs {@code a}, {@code b}; {@code m0}, {@code m1} that give the 64 KiB
     * chunk striping the 32 KiB one's layout; {@code st} and {@code top}, exported.
     */
    private static String yaml() {
        StringBuilder y = new StringBuilder("""
                memory: 32MiB
                control: ctl.sock
                devices:
                  a: { memory: 16MiB }
                  b: { memory: 16MiB }
                mapped:
                """);
        for (int leg = 0; leg < 2; leg++) {
            y.append("  m").append(leg).append(": |\n");
            for (String line : legTable(leg)) {
                y.append("    ").append(line).append('\n');
            }
        }
        y.append("  st: \"0 ").append(N).append(" striped 2 ").append(CHUNK_SMALL).append(" a 0 b 0\"\n");
        y.append("  top: \"0 ").append(N).append(" linear st 0\"\n");
        y.append("exports:\n  top: { device: top }\n");
        return y.toString();
    }

    /**
     * The table of leg {@code leg} of the large-chunk striping: sector y of the leg is sector
     * x = (2 (y / L) + leg) L + y % L of {@code st} (L the large chunk), which the small-chunk
     * striping puts on leg x / S % 2 at (x / S / 2) S + x % S (S the small chunk). L is a
     * multiple of S, so each S-sector run of the leg is one run on {@code a} or {@code b}.
     */
    static List<String> legTable(int leg) {
        List<String> lines = new ArrayList<>();
        for (long y = 0; y < N / 2; y += CHUNK_SMALL) {
            long x = (2 * (y / CHUNK_LARGE) + leg) * CHUNK_LARGE + y % CHUNK_LARGE;
            long chunk = x / CHUNK_SMALL;
            String device = chunk % 2 == 0 ? "a" : "b";
            lines.add(y + " " + CHUNK_SMALL + " linear " + device + " " + (chunk / 2) * CHUNK_SMALL);
        }
        return lines;
    }
}
