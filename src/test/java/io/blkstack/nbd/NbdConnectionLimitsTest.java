package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.Programs;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.UnaryOperator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The edges of {@link NbdServer}'s connection handling (issue 12): accept failures do not end the
 * accept task, idle clients beyond the old hard-coded 64 do not lock out a new one, a client past
 * the configured limit gets a clean NBD error with a message, and the handshake and idle timeouts
 * disconnect silent clients with a logged reason. Every wait is on an observable event (a reply, a
 * socket reaching end of stream) under a bounded test timeout; nothing sleeps or measures time.
 */
class NbdConnectionLimitsTest extends ServerTestBase {

    private static final long MiB = 1L << 20;

    /** Starts a kernel and a server over one 1 MiB memory export "a", options adjusted by {@code tune}. */
    private InetSocketAddress start(UnaryOperator<NbdServer.Options> tune, NbdServer.Acceptor acceptor)
            throws IOException {
        tk = new TestKernel("nbd-limits", 64 * MiB, Policies.defaults(), Faults.NONE);
        Export export = new Export("a", new MemoryDevice(tk.kernel, "dev-a", MiB, 0), false, "");
        NbdServer.Options options = tune.apply(NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0))
                .withLog(serverLog()));
        server = new NbdServer(tk.kernel, List.of(export), options);
        if (acceptor != null) {
            server.acceptWith(acceptor);
        }
        server.start();
        return server.localAddress();
    }

    /** A client kept open until the end of the test. */
    private NbdTestClient client(InetSocketAddress addr) throws IOException {
        return keep(new NbdTestClient(addr));
    }

    /** Negotiates export "a" and proves the connection serves: a write read back. */
    private static void proveServes(NbdTestClient c, long seed) throws IOException {
        c.go("a");
        byte[] data = new byte[4096];
        new Random(seed).nextBytes(data);
        assertEquals(0, c.writeSync(8192, data, 0));
        assertArrayEquals(data, c.readSync(8192, data.length));
    }

    private boolean logged(String text) {
        for (String line : log) {
            if (line.contains(text)) {
                return true;
            }
        }
        return false;
    }

    // ---- accept failures -----------------------------------------------------------------------

    /**
     * Proves the accept task survives failed accepts: the first three accepts fail as accept(2)
     * does when the process is out of descriptors (the pending client stays in the backlog), then
     * the real accept takes the client, which completes a handshake and a write and read. Before the
     * fix the first failure ended the accept task and the client never got its greeting.
     */
    @Test
    @Timeout(60)
    void acceptKeepsServingAfterAcceptFailures() throws Exception {
        AtomicInteger failuresLeft = new AtomicInteger(3);
        InetSocketAddress addr = start(o -> o, listener -> {
            if (failuresLeft.getAndDecrement() > 0) {
                throw new IOException("Too many open files");
            }
            return listener.accept();
        });
        NbdTestClient c = client(addr).greet();
        proveServes(c, 1);
        assertEquals(3, tk.kernel.counters().value("nbd.accept-failures"));
        assertTrue(logged("accept failed (3 in a row): Too many open files; retrying in 40ms"), log.toString());
        assertTrue(logged("accepting again after 3 failed accept(s)"), log.toString());
        // And it keeps accepting: a second client is served too.
        proveServes(client(addr).greet(), 2);
    }

    // ---- the connection limit ------------------------------------------------------------------

    /**
     * Proves idle connections beyond the old hard-coded limit of 64 do not lock a new client out
     * under the default limit: 70 clients sit in option haggling (each got its greeting, so each
     * was admitted), then a 71st negotiates an export and writes and reads.
     */
    @Test
    @Timeout(120)
    void seventyIdleConnectionsDoNotLockOutANewClient() throws Exception {
        InetSocketAddress addr = start(o -> o, null);
        assertEquals(NbdServer.Options.CONNECTIONS_DEFAULT, server.options().connectionsMax());
        for (int i = 0; i < 70; i++) {
            client(addr).greet();
        }
        proveServes(client(addr).greet(), 3);
        assertFalse(logged("refused"), log.toString());
    }

    /**
     * Proves a client past a configured limit of 2 is refused the NBD way: it gets the greeting,
     * then {@code NBD_REP_ERR_POLICY} carrying "too many connections (limit 2)" for its option (a
     * message clients print), an ACK for its ABORT and the end of the session; the server logs the
     * refusal and the two admitted clients are served as before.
     */
    @Test
    @Timeout(60)
    void pastTheLimitAClientGetsACleanNbdError() throws Exception {
        InetSocketAddress addr = start(o -> o.withConnectionsMax(2), null);
        NbdTestClient first = client(addr).greet();
        NbdTestClient second = client(addr).greet();

        NbdTestClient third = client(addr).greet();
        List<NbdTestClient.OptionReply> replies = third.option(OPT_GO, NbdTestClient.infoData("a", INFO_BLOCK_SIZE));
        assertEquals(1, replies.size(), "one final reply: the error");
        assertEquals(REP_ERR_POLICY, replies.get(0).type());
        assertEquals(OPT_GO, replies.get(0).option());
        assertEquals("too many connections (limit 2)", new String(replies.get(0).data(), StandardCharsets.UTF_8));
        // Further options get the same answer until the client gives up with ABORT.
        assertEquals(REP_ERR_POLICY, third.option(OPT_LIST, new byte[0]).get(0).type());
        assertEquals(REP_ACK, third.option(OPT_ABORT, new byte[0]).get(0).type());
        assertTrue(third.readsEof());
        assertTrue(logged("refused nbd-3 from /127.0.0.1:"), log.toString());
        assertTrue(logged(": too many connections (limit 2)"), log.toString());

        // EXPORT_NAME cannot carry an error: a refused client that sends it is disconnected.
        NbdTestClient fourth = client(addr).greet();
        fourth.sendOption(OPT_EXPORT_NAME, "a".getBytes(StandardCharsets.UTF_8));
        assertTrue(fourth.readsEof());

        proveServes(first, 4);
        proveServes(second, 5);
        assertEquals(2, tk.kernel.counters().value("nbd.refusals"));
    }

    /**
     * The refusal as a real client shows it: with the only connection taken, {@code qemu-img info}
     * fails and prints the server's message (run when qemu-img is installed, as in CI).
     */
    @Test
    @Timeout(120)
    void qemuImgPrintsTheRefusalMessage() throws Exception {
        assumeTrue(Programs.installed("qemu-img"), "qemu-img is not installed");
        InetSocketAddress addr = start(o -> o.withConnectionsMax(1), null);
        client(addr).greet();
        Process p = new ProcessBuilder("qemu-img", "info", "nbd://127.0.0.1:" + addr.getPort() + "/a")
                .redirectErrorStream(true).start();
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "qemu-img did not finish");
        assertNotEquals(0, p.exitValue(), output);
        assertTrue(output.contains("too many connections (limit 1)"), output);
        assertTrue(logged("refused nbd-2 from /127.0.0.1:"), log.toString());
    }

    // ---- timeouts ------------------------------------------------------------------------------

    /**
     * Proves the handshake timeout: with 200 ms configured, a client that reads the greeting and
     * then says nothing, and one that does not even send its flags, are both disconnected (their
     * sockets reach end of stream) with the reason in the log. Before the fix they waited forever.
     */
    @Test
    @Timeout(60)
    void handshakeTimeoutDisconnectsASilentClient() throws Exception {
        InetSocketAddress addr = start(o -> o.withHandshakeTimeoutNanos(200_000_000L), null);
        NbdTestClient silentAfterFlags = client(addr).greet();
        NbdTestClient silentBeforeFlags = client(addr);
        assertTrue(silentAfterFlags.readsEof());
        assertTrue(silentBeforeFlags.readsEof());
        // The timer shuts the socket down, then the reader logs: wait for both lines.
        List<String> lines = List.of(awaitLogged("handshake not completed"), awaitLogged("handshake not completed"));
        for (String line : lines) {
            assertTrue(line.matches("nbd: nbd-[12] \\(/127\\.0\\.0\\.1:\\d+\\): disconnected: handshake not completed"
                    + " within 200ms"), line);
        }
    }

    /**
     * Proves the idle timeout: with 200 ms configured, a client that negotiated, wrote and read,
     * then sent nothing more is disconnected with the reason in the log; the connection's
     * completed requests do not keep it open.
     */
    @Test
    @Timeout(60)
    void idleTimeoutDisconnectsAnIdleClient() throws Exception {
        InetSocketAddress addr = start(o -> o.withIdleTimeoutNanos(200_000_000L), null);
        NbdTestClient c = client(addr).greet();
        proveServes(c, 6);
        assertTrue(c.readsEof());
        String line = awaitLogged("idle");
        assertTrue(line.matches("nbd: nbd-1 \\(/127\\.0\\.0\\.1:\\d+\\): disconnected: idle for 200ms \\(idle timeout\\)"),
                line);
    }

    /**
     * Proves a client that breaks the protocol is disconnected with the reason in the log: an
     * option with a wrong magic, an option whose length is 0xffffffff, unknown client flags, and
     * after the handshake a request with a wrong magic. Before, each was a silent reset.
     */
    @Test
    @Timeout(60)
    void protocolViolationsAreLoggedWithTheirReason() throws Exception {
        InetSocketAddress addr = start(o -> o, null);
        NbdTestClient badMagic = client(addr).greet();
        badMagic.write(ByteBuffer.allocate(16).putLong(0x1234L).putInt(OPT_GO).putInt(0).flip());
        assertTrue(badMagic.readsEof());
        assertTrue(awaitLogged("disconnected in the handshake").endsWith(": an option with magic 0x1234, not IHAVEOPT"));
        NbdTestClient huge = client(addr).greet();
        huge.write(ByteBuffer.allocate(16).putLong(IHAVEOPT).putInt(OPT_GO).putInt(-1).flip());
        assertTrue(huge.readsEof());
        String line = awaitLogged("disconnected in the handshake");
        assertTrue(line.contains(": option " + OPT_GO + " with 4294967295 bytes of data (at most "), line);
        NbdTestClient flags = client(addr).greet(0x80);
        assertTrue(flags.readsEof());
        assertTrue(awaitLogged("disconnected in the handshake").endsWith(": unknown client flags 0x80"));
        NbdTestClient garbage = client(addr).greet();
        proveServes(garbage, 7);
        garbage.write(ByteBuffer.allocate(28).putInt(0, 0x0bad0bad)); // a whole header's bytes, the magic wrong
        assertTrue(garbage.readsEof());
        line = awaitLogged("disconnected: a request");
        assertTrue(line.matches("nbd: nbd-\\d+ \\(/127\\.0\\.0\\.1:\\d+\\): disconnected: a request with magic 0xbad0bad,"
                + " not NBD_REQUEST_MAGIC"), line);
    }

    /** Options are checked with the bad value in the message. */
    @Test
    void optionsRefuseBadLimitsAndTimeouts() {
        NbdServer.Options o = NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> o.withConnectionsMax(0));
        assertTrue(e.getMessage().contains("connections 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> o.withHandshakeTimeoutNanos(0));
        assertTrue(e.getMessage().contains("handshake timeout 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> o.withIdleTimeoutNanos(-1));
        assertTrue(e.getMessage().contains("idle timeout -1"), e.getMessage());
        assertEquals(10_000_000_000L, o.handshakeTimeoutNanos());
        assertEquals(0, o.idleTimeoutNanos());
    }
}
