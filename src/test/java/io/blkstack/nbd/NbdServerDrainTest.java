package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.CMD_READ;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.net.InetSocketAddress;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The server's bounded drain, with a request a device holds until the test lets it go
 * ({@link GatedDevice}): no sleeps, and the only timeout is the drain's own, whose length is not
 * asserted.
 */
class NbdServerDrainTest {

    private static final long MiB = 1L << 20;

    // Proves every step of a bounded stop: a drain with a deadline returns false while the device
    // holds the request, and says which request and where its bio is; after skipDrain a skippable
    // drain returns at once; cutConnections closes the client's connection (the client reads end of
    // stream: its request has failed); when the device completes the bio at last, the connection
    // ends and close returns every page and bio (the kernel's close checks).
    @Test
    @Timeout(60)
    void aDrainWithADeadlineEndsAndCutConnectionsReleasesTheClient() throws Exception {
        long gatedSector = 2048;
        try (TestKernel tk = new TestKernel("nbd-drain", 64 * MiB, Policies.defaults(), Faults.NONE)) {
            GatedDevice gate = new GatedDevice(tk.kernel, "gated", 4 * MiB, gatedSector);
            NbdServer server = new NbdServer(tk.kernel, List.of(new Export("g", gate, false, "")),
                    new InetSocketAddress("127.0.0.1", 0));
            server.start();
            try (NbdTestClient c = new NbdTestClient(server.localAddress()).greet()) {
                c.go("g");
                c.request(0, CMD_READ, 7, gatedSector * 512, 4096, null);
                gate.arrived.await();

                assertFalse(server.drain(50_000_000L, true), "the drain cannot finish while the device holds the read");
                String held = server.describeConnections();
                assertTrue(held.contains("1 request(s) in flight: nbd READ cookie 7"), held);
                assertTrue(held.contains("in flight at device gated"), held);

                server.skipDrain();
                assertFalse(server.drain(-1, true), "a skipped drain returns at once");

                List<String> cut = server.cutConnections();
                assertEquals(1, cut.size(), cut.toString());
                assertTrue(c.readsEof(), "the client sees its connection end");
            }
            gate.open();
            server.close();
            assertEquals(0, server.connectionCount());
            gate.close();
        }
    }
}
