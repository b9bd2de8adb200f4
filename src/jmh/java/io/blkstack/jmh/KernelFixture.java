package io.blkstack.jmh;

import io.blkstack.kernel.Kernel;

/**
 * A kernel with the benchmark thread attached as one of its tasks, so the primitives under
 * measurement may block, allocate with waiting and run the submit loop as they do in a server.
 * Closing detaches the thread, then closes the kernel, whose close checks that every page and
 * pooled object came back (a benchmark that leaks fails its tear-down).
 */
final class KernelFixture implements AutoCloseable {

    /** The page arena of every benchmark kernel. */
    static final long MEMORY_BYTES = 64L << 20;

    private final Kernel kernel;
    private final Kernel.Attachment self;

    KernelFixture(String name) {
        this.kernel = Kernel.builder().name(name).memory(MEMORY_BYTES).build();
        this.self = kernel.attach("jmh " + name);
    }

    Kernel kernel() {
        return kernel;
    }

    @Override
    public void close() {
        try {
            self.close();
        } finally {
            kernel.close();
        }
    }
}
