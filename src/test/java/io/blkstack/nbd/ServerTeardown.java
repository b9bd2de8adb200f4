package io.blkstack.nbd;

import io.blkstack.block.TestKernel;

/** The NBD tests' common tear-down: the server first, then the kernel, which checks every page, bio and pool element came back. */
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
}
