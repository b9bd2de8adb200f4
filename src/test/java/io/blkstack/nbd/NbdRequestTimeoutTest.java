package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.TaskKind;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The request timeout ("every wait has an end"): a device that never gives a request back (a
 * target that lost a bio to a bug, a device that stalls) used to leave its client waiting for a
 * reply for ever. Past the request timeout the server cuts that connection, so the client sees the
 * stream end; its other requests finish, another client of the same export goes on, the server's
 * drain returns, and the kept request's pages come back when the device finally completes it, after
 * its connection ended. Waits are on events (end of stream, a log line, a drain) under bounded test
 * timeouts; nothing is timed.
 */
class NbdRequestTimeoutTest extends ServerTestBase {

    private static final long MiB = 1L << 20;
    /** The timeout the tests run with; short, since every test waits it out once. */
    private static final long TIMEOUT_NANOS = 200_000_000L;

    /** The bios the stuck device holds (its block at 4 KiB), until a test completes them. */
    private final List<Bio> held = new CopyOnWriteArrayList<>();

    /**
     * Export "stuck": a 4 MiB device that completes every bio at once (reads leave the pages as they
     * are), except that it keeps every bio touching its second 4 KiB block; the server has a
     * request timeout of {@link #TIMEOUT_NANOS}.
     */
    private InetSocketAddress start() throws IOException {
        return start(NbdProtocol.DEFAULT_MAX_PAYLOAD);
    }

    /** As {@link #start()}, with the export's maximum payload (a request's window) {@code maximumPayload}. */
    private InetSocketAddress start(int maximumPayload) throws IOException {
        tk = new TestKernel("nbd-request-timeout", 64 * MiB, Policies.defaults(), Faults.NONE);
        BlockDevice stuck = new BlockDevice(tk.kernel, "stuck", (4 * MiB) >>> 9, QueueLimits.defaults()) {
            @Override
            protected void submitBio(Bio bio) {
                long first = bio.sector();
                long end = bio.endSector();
                if (first < 16 && end > 8) {
                    held.add(bio); // never completed, until the test says so
                } else {
                    bio.endio();
                }
            }
        };
        NbdServer.Options options = NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0))
                .withRequestTimeoutNanos(TIMEOUT_NANOS)
                .withLog(serverLog());
        Export export = new Export("stuck", stuck, false, "").withMaximumPayload(maximumPayload);
        server = new NbdServer(tk.kernel, List.of(export), options);
        server.start();
        return server.localAddress();
    }

    private NbdTestClient client(InetSocketAddress addr) throws IOException {
        NbdTestClient c = keep(new NbdTestClient(addr)).greet();
        c.go("stuck");
        return c;
    }

    /** A client of export "stuck" that did not ask for block sizes: its larger requests are served in windows. */
    private NbdTestClient windowedClient(InetSocketAddress addr) throws IOException {
        NbdTestClient c = keep(new NbdTestClient(addr)).greet();
        c.exportName("stuck");
        return c;
    }

    /**
     * Completes every held bio on a kernel task, as the device would had it come back late, and
     * waits for that task: the late completions free the requests the timeout lost.
     */
    private void completeHeld() {
        Completion done = new Completion("test late completions");
        tk.kernel.spawn("test-late", TaskKind.USER, () -> {
            try {
                for (Bio bio : held) {
                    bio.endio();
                }
            } finally {
                done.complete();
            }
        });
        done.await();
    }

    /**
     * Proves the cut: a READ the device keeps ends its connection once the timeout passes (the
     * client sees the stream end, after the reply of its READ that did complete), with the request
     * and where its bio is logged; another client of the same export is served before and after;
     * the server drains (the connection ended without the kept request) with the kept request's
     * 2 budget pages out; and when the device completes it at last, those pages come back and
     * the kernel's close finds nothing missing. Before, the client waited for ever, and so did the
     * server's close.
     */
    @Test
    @Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a hung close cannot be interrupted
    void aRequestItsDeviceKeepsCutsItsConnectionOnlyAndIsFreedWhenItComesBack() throws Exception {
        InetSocketAddress addr = start();
        NbdTestClient hurt = client(addr);
        NbdTestClient other = client(addr);
        assertEquals(0, other.writeSync(0, new byte[4096], 0));
        hurt.request(0, CMD_READ, 71, 4096, 4096, null); // kept by the device
        hurt.request(0, CMD_READ, 72, 0, 4096, null);
        NbdTestClient.Reply done = hurt.readReply();
        assertEquals(72, done.cookie(), "the READ the device completed is answered");
        assertEquals(0, done.error());
        assertTrue(hurt.readsEof(), "the client of the kept READ got no stream end");
        String cut = awaitLogged("(request timeout)");
        assertTrue(cut.contains("cookie 47 offset 4096") && cut.contains("200ms"), cut);
        assertEquals(1, tk.kernel.counters().value("nbd.request-timeouts"));
        assertEquals(0, other.writeSync(8192, new byte[4096], 0), "another client of the same export");
        assertEquals(4096, other.readSync(0, 4096).length);
        other.close();
        assertTrue(server.drain(30_000_000_000L, false), "the drain waited for the kept request: "
                + server.describeState());
        awaitLogged("1 request(s) lost to a fault or the request timeout keep 2 page(s)");
        assertEquals(server.budget().totalPages() - 2, server.budget().freePages(), "the kept READ's budget");
        assertEquals(1, held.size());
        completeHeld();
        assertEquals(server.budget().totalPages(), server.budget().freePages(), "the late READ's budget came back");
        tearDown(); // on the test's own thread, to which the kernel is bound
    }

    /**
     * Proves a kept WRITE fails later writes to its block instead of hanging them: once the timeout
     * lost it (a bio of it may still land), another client's read-modify-write over that block gets
     * EIO at once rather than wait for it, and one elsewhere succeeds; the write comes back late
     * and is freed.
     */
    @Test
    @Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void aWriteItsDeviceKeepsFailsAReadModifyWriteOverItInsteadOfHangingIt() throws Exception {
        InetSocketAddress addr = start();
        NbdTestClient hurt = client(addr);
        NbdTestClient other = client(addr);
        hurt.request(0, CMD_WRITE, 81, 4096, 4096, new byte[4096]); // kept by the device
        assertTrue(hurt.readsEof(), "the client of the kept WRITE got no stream end");
        awaitLogged("(request timeout)");
        assertEquals(EIO, other.writeSync(4096 + 100, new byte[50], 0), "a read-modify-write over the kept write");
        assertEquals(0, other.writeSync(65536 + 100, new byte[50], 0), "a read-modify-write elsewhere");
        completeHeld();
        other.close();
        assertTrue(server.drain(30_000_000_000L, false), server.describeState());
        assertEquals(server.budget().totalPages(), server.budget().freePages(), "the late WRITE's budget came back");
        tearDown(); // on the test's own thread, to which the kernel is bound
    }

    /**
     * Proves the cut reaches a request served window by window: a WRITE and a READ of two windows
     * each (64 KiB windows), whose first window the device keeps, end their clients' connections
     * (the reader waiting for the window to finish goes on, finds the request lost and stops); the
     * windows are freed when the device completes them at last, and the WRITE's range with them (a
     * read-modify-write over it would otherwise fail as one over a lost write).
     */
    @Test
    @Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void aWindowItsDeviceKeepsCutsItsConnectionAndIsFreedWhenItComesBack() throws Exception {
        InetSocketAddress addr = start(64 * 1024);
        NbdTestClient writer = windowedClient(addr);
        NbdTestClient reader = windowedClient(addr);
        writer.request(0, CMD_WRITE, 91, 0, 128 * 1024, new byte[128 * 1024]);
        reader.request(0, CMD_READ, 92, 0, 128 * 1024, null);
        assertTrue(writer.readsEof(), "the client of the kept WRITE window got no stream end");
        assertTrue(reader.readsEof(), "the client of the kept READ window got no stream end");
        assertTrue(server.drain(30_000_000_000L, false), server.describeState());
        assertEquals(2, tk.kernel.counters().value("nbd.request-timeouts"));
        assertEquals(2, held.size());
        completeHeld();
        assertEquals(server.budget().totalPages(), server.budget().freePages(), "the late windows' budget came back");
        assertEquals(0, server.exports().get(0).device().trackedRequests().count(),
                "the late WRITE's range is still tracked: a read-modify-write over it would fail");
        tearDown(); // on the test's own thread, to which the kernel is bound
    }
}
