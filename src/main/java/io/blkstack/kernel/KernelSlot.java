package io.blkstack.kernel;

import java.util.Objects;
import java.util.function.Function;

/**
 * A typed piece of per-kernel state owned by a layer above the kernel: the worker pool, the thin
 * pool table, the snapshot origins, the target types. The {@link TaskSlot} idea, per kernel.
 *
 * <p>Keeps the kernel free of dependencies on the layers that use it, and keeps every such table
 * out of static fields (DESIGN.md section 2: one kernel is one independent block layer, so two
 * kernels in one process share nothing). A layer declares its slot once, as a static final key
 * that holds no state; {@link Kernel#state} creates the value on first use and the kernel keeps it
 * until it closes. A value that implements {@link Owned} is checked empty when the kernel closes.
 */
public final class KernelSlot<T> {

    private final String name;
    private final Function<Kernel, T> create;

    private KernelSlot(String name, Function<Kernel, T> create) {
        this.name = Objects.requireNonNull(name, "name");
        this.create = Objects.requireNonNull(create, "create");
    }

    /**
     * Declares a slot; {@code create} builds the kernel's value on first use. It runs once per
     * kernel, may register components and spawn tasks, must not block (it runs inside the
     * kernel's table update, see {@link Kernel#state}) and must not read another slot.
     */
    public static <T> KernelSlot<T> of(String name, Function<Kernel, T> create) {
        return new KernelSlot<>(name, create);
    }

    T create(Kernel kernel) {
        T value = create.apply(kernel);
        if (value == null) {
            throw new IllegalStateException(this + " created null for " + kernel);
        }
        return value;
    }

    @Override
    public String toString() {
        return "kernel slot " + name;
    }

    /** Per-kernel state that must be empty once the kernel's components are closed. */
    public interface Owned {
        /** What is still held (a short description), or null when nothing is. */
        String leftOver();
    }
}
