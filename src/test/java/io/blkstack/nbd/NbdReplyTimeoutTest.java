package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The reply timeout (issue 12, bullet 3, and "every wait has an end"): a client that sends
 * requests and never reads the replies holds its admitted requests' budget and pages, and its
 * connection's writer waits in a socket write; past the reply timeout the server cuts it, the
 * budget is whole again, and a well-behaved client next to it keeps working. A client that reads
 * slowly but steadily is not cut, and {@code off} never cuts. Waits are on events (a log line, end
 * of stream) under bounded test timeouts; only the steady reader's pace uses the clock.
 */
class NbdReplyTimeoutTest extends ServerTestBase {

    private static final long MiB = 1L << 20;
    /** The slow clients' socket receive buffer: small, so the server's writes block soon. */
    private static final int RECEIVE_BYTES = 64 * 1024;

    /** A 16 MiB arena (about 12 MiB of payload budget), exports "slow" (64 MiB) and "good" (1 MiB). */
    private InetSocketAddress start(long replyTimeoutNanos) throws IOException {
        tk = new TestKernel("nbd-reply-timeout", 16 * MiB, Policies.defaults(), Faults.NONE);
        NbdServer.Options options = NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0))
                .withReplyTimeoutNanos(replyTimeoutNanos)
                .withLog(serverLog());
        server = new NbdServer(tk.kernel, List.of(
                new Export("slow", new MemoryDevice(tk.kernel, "dev-slow", 64 * MiB, 0), false, ""),
                new Export("good", new MemoryDevice(tk.kernel, "dev-good", MiB, 0), false, "")), options);
        server.start();
        return server.localAddress();
    }

    /** A write read back on export "good". */
    private static void proveServes(NbdTestClient good, long seed) throws IOException {
        byte[] data = new byte[64 * 1024];
        new Random(seed).nextBytes(data);
        assertEquals(0, good.writeSync(4096, data, 0));
        assertArrayEquals(data, good.readSync(4096, data.length));
    }

    /** Sends {@code count} READs of 1 MiB on export "slow" and reads nothing. */
    private static void sendReads(NbdTestClient slow, int count) throws IOException {
        for (int i = 0; i < count; i++) {
            slow.request(0, CMD_READ, i, i * MiB, (int) MiB, null);
        }
    }

    /**
     * Proves the cut: with a 300 ms reply timeout, a client that sends 64 READs of 1 MiB and reads
     * nothing is disconnected with the reason logged; its socket then reaches end of stream (or
     * reset), the payload budget is whole again (the line is logged once the connection's requests
     * have all returned theirs), and a well-behaved client next to it served before and after.
     * Before the fix no line came and the slow client held its budget for as long as it stayed.
     */
    @Test
    @Timeout(90)
    void aClientThatNeverReadsIsCutAndItsBudgetReturns() throws Exception {
        InetSocketAddress addr = start(300_000_000L);
        NbdTestClient slow = keep(new NbdTestClient(addr, RECEIVE_BYTES)).greet();
        NbdTestClient good = keep(new NbdTestClient(addr)).greet();
        slow.go("slow");
        good.go("good");
        sendReads(slow, 64);
        proveServes(good, 1);

        String line = awaitLogged("reply timeout");
        assertTrue(line.matches("nbd: nbd-1 \\(/127\\.0\\.0\\.1:\\d+\\): disconnected: replies not read for 300ms"
                + " \\(reply timeout\\)"), line);
        assertEquals(server.budget().totalPages(), server.budget().freePages(), server.describeState());
        assertTrue(slow.readsEof());
        proveServes(good, 2);
        assertEquals(1, server.connectionCount(), server.describeState());
    }

    /**
     * Proves the cut for a client that stops sending mid-payload: three clients each send a WRITE
     * header for the largest payload the server offers and 64 KiB of it, then stop; their windows
     * hold the whole payload budget, so a fourth client's 4 KiB write waits for budget. With a 300
     * ms reply timeout each stalled client is cut ("a request's payload stalled"), its budget
     * returns and the waiting write completes. Before, they held the budget until the request
     * timeout (2 minutes), and every other client's writes waited as long.
     */
    @Test
    @Timeout(90)
    void clientsThatStallMidPayloadAreCutAndTheOthersWritesGoOn() throws Exception {
        InetSocketAddress addr = start(300_000_000L);
        int maximum = server.exports().get(0).maximumPayload();
        long budgetBytes = server.budget().totalPages() * 4096L;
        int stallers = (int) (budgetBytes / maximum) + 1;
        for (int i = 0; i < stallers; i++) {
            NbdTestClient stalled = keep(new NbdTestClient(addr)).greet();
            stalled.go("slow");
            stalled.request(0, CMD_WRITE, 100 + i, i * (long) maximum, maximum, null);
            stalled.write(ByteBuffer.allocate(64 * 1024)); // then nothing more
        }
        NbdTestClient good = keep(new NbdTestClient(addr)).greet();
        good.go("good");
        proveServes(good, 3);
        String line = awaitLogged("payload stalled");
        assertTrue(line.matches("nbd: nbd-\\d+ \\(/127\\.0\\.0\\.1:\\d+\\): disconnected: a request's payload"
                + " stalled for 300ms \\(reply timeout\\)"), line);
    }

    /**
     * Proves a slow but steady reader is not cut: with a 1 s reply timeout and a 256 KiB
     * receive buffer, a client sends 16 READs of 1 MiB and reads the replies 64 KiB at a time,
     * 10 ms apart (about 2.6 s in all, well over two timeouts, during which the server's writer is mostly
     * blocked, and longer than one gathered batch of replies takes at that pace); every byte
     * arrives, nothing is logged and the connection still serves. (A receive buffer near the
     * loopback MSS of 64 KiB makes TCP itself stall for its persist timer, hence 256 KiB.)
     */
    @Test
    @Timeout(90)
    void aClientReadingSlowlyButSteadilyIsNotCut() throws Exception {
        // 1 s, not less: the client's 10 ms pace may stretch on a loaded machine, and the claim
        // is about steady progress, not about how short a timeout can be.
        InetSocketAddress addr = start(1_000_000_000L);
        NbdTestClient slow = keep(new NbdTestClient(addr, 256 * 1024)).greet();
        slow.go("slow");
        int reads = 16;
        sendReads(slow, reads);
        long expected = reads * (SIMPLE_REPLY_BYTES + MiB);
        ByteBuffer piece = ByteBuffer.allocate(64 * 1024);
        for (long got = 0; got < expected; ) {
            piece.clear().limit((int) Math.min(piece.capacity(), expected - got));
            while (piece.hasRemaining()) {
                assertTrue(slow.channel.read(piece) >= 0, "cut after " + got + " of " + expected + " bytes: " + log);
            }
            got += piece.limit();
            Thread.sleep(10); // the client's pace, not a wait for an event
        }
        assertFalse(log.stream().anyMatch(l -> l.contains("reply timeout")), log.toString());
        assertEquals(4096, slow.readSync(0, 4096).length);
    }

    /**
     * Proves {@code off}: a client that sends 16 READs of 1 MiB and reads nothing for 1.5 s (five
     * times the timeout the cut test uses) is not cut; afterwards every reply arrives whole.
     */
    @Test
    @Timeout(90)
    void offNeverCuts() throws Exception {
        InetSocketAddress addr = start(0);
        NbdTestClient slow = keep(new NbdTestClient(addr, RECEIVE_BYTES)).greet();
        slow.go("slow");
        int reads = 16;
        sendReads(slow, reads);
        assertNull(logLines.poll(1500, TimeUnit.MILLISECONDS), log.toString()); // nothing may be logged meanwhile
        for (int i = 0; i < reads; i++) {
            NbdTestClient.Reply r = slow.readReply();
            assertEquals(0, r.error());
            assertEquals(MiB, r.payload().length);
        }
        assertEquals(4096, slow.readSync(0, 4096).length);
    }

    /** The option is checked with the bad value in the message; the default is 30 s. */
    @Test
    void optionRefusesANegativeTimeout() {
        NbdServer.Options o = NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0));
        assertEquals(30_000_000_000L, o.replyTimeoutNanos());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> o.withReplyTimeoutNanos(-1));
        assertTrue(e.getMessage().contains("reply timeout -1 ns"), e.getMessage());
        assertEquals(0, o.withReplyTimeoutNanos(0).replyTimeoutNanos());
    }
}
