package io.blkstack.kernel;

/**
 * A typed per-task field owned by a layer above the kernel (the bio layer's pending lists).
 *
 * <p>Keeps the kernel free of dependencies on the layers that use it: a layer creates its slot
 * once, as a static final key, and reads it from any {@link Task}. The key holds no state: the
 * values live in each task, found by the key's identity.
 */
public final class TaskSlot<T> {

    /** How many slots one task holds at most; a fixed bound so tasks allocate their arrays once. */
    public static final int MAX = 8;

    private final String name;

    private TaskSlot(String name) {
        this.name = name;
    }

    /** Creates a slot key; call once per layer, from a static initializer. */
    public static <T> TaskSlot<T> create(String name) {
        return new TaskSlot<>(name);
    }

    @Override
    public String toString() {
        return "TaskSlot[" + name + "]";
    }
}
