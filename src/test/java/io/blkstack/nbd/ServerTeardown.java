package io.blkstack.nbd;

import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Task;

/**
 * The NBD tests' common server fixtures: the tear-down (the server first, then the kernel, which
 * checks every page, bio and pool element came back), and finding a connection's writer task.
 */
final class ServerTeardown {

    private ServerTeardown() {
    }

    /** Closes {@code server} (if made) and then {@code tk} (if made), the kernel even if the server's close throws. */
    static void close(NbdServer server, TestKernel tk) {
        try {
            if (server != null) {
                server.close();
            }
        } finally {
            if (tk != null) {
                tk.close(); // throws if any page, bio or pool element was not returned
            }
        }
    }

    /** The (only) connection's writer task, once its reader started it; fails after {@code timeoutNanos}. */
    static Task writerTask(TestKernel tk, NbdServer server, long timeoutNanos) {
        long deadline = System.nanoTime() + timeoutNanos;
        while (true) {
            var found = tk.kernel.scheduler().tasks().stream().filter(t -> t.name().endsWith("-writer")).findFirst();
            if (found.isPresent()) {
                return found.get();
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("the connection's writer task never started: " + server.describeState());
            }
            Thread.onSpinWait();
        }
    }
}
