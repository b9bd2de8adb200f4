package io.blkstack.kernel;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * A typed per-task field owned by a layer above the kernel (the bio layer's pending lists).
 *
 * <p>Keeps the kernel free of dependencies on the layers that use it: a layer creates its slot
 * once, statically, and reads it from any {@link Task}.
 */
public final class TaskSlot<T> {

    /** How many slots exist at most; a fixed bound so tasks allocate their array once. */
    public static final int MAX = 8;

    private static final AtomicInteger NEXT = new AtomicInteger();

    final int index;
    private final String name;

    private TaskSlot(int index, String name) {
        this.index = index;
        this.name = name;
    }

    /** Creates a slot; call once per layer, from a static initializer. */
    public static <T> TaskSlot<T> create(String name) {
        int index = NEXT.getAndIncrement();
        if (index >= MAX) {
            throw new IllegalStateException("too many task slots: " + (index + 1) + " > " + MAX + " (" + name + ")");
        }
        return new TaskSlot<>(index, name);
    }

    @Override
    public String toString() {
        return "TaskSlot[" + name + "]";
    }
}
