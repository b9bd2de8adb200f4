package io.blkstack.config;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.block.TestKernel;
import io.blkstack.nbd.NbdServer;
import java.net.InetSocketAddress;
import java.util.List;

/**
 * A configured stack served over NBD for the interop tests: built in a test kernel, its exports
 * served on an ephemeral loopback port while a client runs, then stopped, with every device
 * flushing cleanly on the way down.
 */
public final class ServedStack {

    /** A client run against a served stack. */
    @FunctionalInterface
    public interface Client {
        void run(int port, Stack stack) throws Exception;
    }

    private ServedStack() {
    }

    /** Builds {@code config}'s stack in {@code tk}'s kernel, serves it, runs the client, tears down. */
    public static void serve(TestKernel tk, StackConfig config, Client client) throws Exception {
        try (Stack stack = Stack.build(tk.kernel, config, Stack.Mode.SERVE)) {
            NbdServer server = new NbdServer(tk.kernel, stack.exports(), new InetSocketAddress("127.0.0.1", 0));
            try {
                server.start();
                client.run(server.localAddress().getPort(), stack);
            } finally {
                server.close();
            }
            assertEquals(List.of(), stack.flushAll());
        }
    }
}
