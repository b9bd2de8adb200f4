package io.blkstack.block;

import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;

/**
 * A kernel with the test thread attached as a task. Closing it closes the kernel while still
 * attached (closing bio sets frees slab pages, which takes spin locks) and then detaches; the
 * kernel's close throws if any page, bio or pool element did not come back.
 */
public final class TestKernel implements AutoCloseable {

    public final Kernel kernel;
    private final Kernel.Attachment self;

    public TestKernel(String name, long memoryBytes, Policies policies, Faults faults) {
        this.kernel = Kernel.builder().name(name).memory(memoryBytes).policies(policies).faults(faults).build();
        this.self = kernel.attach("test");
    }

    /** 16 MiB, default policies, no faults. */
    public TestKernel(String name) {
        this(name, 16L << 20, Policies.defaults(), Faults.NONE);
    }

    @Override
    public void close() {
        try {
            kernel.close();
        } finally {
            self.close();
        }
    }
}
