package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import io.blkstack.block.TestKernel;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import org.junit.jupiter.api.AfterEach;

/**
 * What a test of a running {@link NbdServer} holds: its kernel, the server, the clients it opened
 * and the server's log lines, and the teardown that closes them in order (the kernel's close checks
 * that every page, bio and pool element came back). A test sets {@link #tk} and {@link #server},
 * gives the server {@link #serverLog()} and {@link #keep keeps} its clients.
 */
abstract class ServerTestBase {

    TestKernel tk;
    NbdServer server;
    /** Every line the server logged. */
    final List<String> log = new CopyOnWriteArrayList<>();
    /** The lines again, for waiting on one that a server task writes after the event a test saw. */
    final BlockingQueue<String> logLines = new LinkedBlockingQueue<>();
    private final List<NbdTestClient> clients = new ArrayList<>();

    /** The server's log: into {@link #log}, and for {@link #awaitLogged}. */
    Consumer<String> serverLog() {
        return line -> {
            log.add(line);
            logLines.add(line);
        };
    }

    /** Keeps {@code c} to be closed at the end; returns it. */
    NbdTestClient keep(NbdTestClient c) {
        clients.add(c);
        return c;
    }

    /** Waits (bounded) for the next log line containing {@code text}; returns it. */
    String awaitLogged(String text) throws InterruptedException {
        while (true) {
            String line = logLines.poll(30, TimeUnit.SECONDS);
            assertNotNull(line, "no log line containing '" + text + "' within 30 s; log: " + log
                    + (server == null ? "" : "; " + server.describeState()));
            if (line.contains(text)) {
                return line;
            }
        }
    }

    /**
     * Closes the clients, the server (checking that no connection is left) and the kernel, and
     * forgets them, so that a second call does nothing. A test that runs in a thread of its own
     * calls it itself: the kernel is bound to the thread that made it.
     */
    @AfterEach
    void tearDown() throws IOException {
        try {
            for (NbdTestClient c : clients) {
                c.close();
            }
            clients.clear();
            if (server != null) {
                NbdServer s = server;
                server = null;
                s.close();
                assertEquals(0, s.connectionCount(), "connections left after close");
            }
        } finally {
            if (tk != null) {
                TestKernel kernel = tk;
                tk = null;
                kernel.close(); // throws if any page, bio or pool element was not returned
            }
        }
    }
}
