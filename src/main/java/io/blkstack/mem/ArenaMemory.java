package io.blkstack.mem;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.ByteBuffer;

/**
 * The memory behind one page arena: page-aligned, direct, and released when the arena closes.
 *
 * <p>Where the platform allows it (Linux, the foreign-function API usable), the memory is an
 * anonymous private mapping ({@code mmap(MAP_PRIVATE | MAP_ANONYMOUS)}): the operating system
 * hands out zeroed pages as they are first touched, so creating an arena costs nothing per byte.
 * {@link ByteBuffer#allocateDirect} writes zeros over all of it first, and a checker campaign builds
 * a fresh kernel (a 64 MiB arena by default) for every schedule: that zeroing was about 40% of a
 * campaign's CPU time. The mapping is bound to a shared {@link Arena}, so a buffer touched after
 * {@link #close} throws {@link IllegalStateException} instead of reaching unmapped memory, and
 * {@link #close} unmaps it at once.
 *
 * <p>Elsewhere, or when asked ({@code mapped == false}, which the tests use to run the plain-JDK
 * path), it is {@link ByteBuffer#allocateDirect}, aligned with one spare page and freed by the
 * garbage collector. Both read as zeros before first written.
 */
final class ArenaMemory implements AutoCloseable {

    private static final int PROT_READ_WRITE = 0x1 | 0x2;
    private static final int MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20;

    /** The libc entry points, bound once per JVM; absent where the platform is not Linux. */
    private record Libc(MethodHandle mmap, MethodHandle munmap) {

        static final Libc INSTANCE = bind();

        private static Libc bind() {
            MethodHandle mmap = NativeCalls.libc("mmap", FunctionDescriptor.of(ValueLayout.ADDRESS, ValueLayout.ADDRESS,
                    ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                    ValueLayout.JAVA_LONG));
            MethodHandle munmap = NativeCalls.libc("munmap",
                    FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG));
            return mmap == null || munmap == null ? null : new Libc(mmap, munmap);
        }
    }

    private final ByteBuffer buffer;
    /** The arena the mapping is bound to (closing it unmaps), or null for direct memory. */
    private final Arena arena;

    private ArenaMemory(ByteBuffer buffer, Arena arena) {
        this.buffer = buffer;
        this.arena = arena;
    }

    /** {@code bytes} of zeroed, page-aligned memory; mapped lazily if {@code mapped} and possible. */
    static ArenaMemory allocate(int bytes, boolean mapped) {
        Libc libc = Libc.INSTANCE;
        if (mapped && libc != null) {
            ArenaMemory m = map(libc, bytes);
            if (m != null) {
                return m;
            }
        }
        ByteBuffer direct = ByteBuffer.allocateDirect(bytes + Page.SIZE).alignedSlice(Page.SIZE);
        return new ArenaMemory(direct.slice(0, bytes), null);
    }

    private static ArenaMemory map(Libc libc, int bytes) {
        MemorySegment address;
        try {
            address = (MemorySegment) libc.mmap().invokeExact(MemorySegment.NULL, (long) bytes, PROT_READ_WRITE,
                    MAP_PRIVATE_ANONYMOUS, -1, 0L);
        } catch (Throwable t) {
            return null;
        }
        if (address.address() == -1L || address.address() == 0L) {
            return null; // MAP_FAILED: fall back to direct memory, which fails loudly if memory is short
        }
        Arena arena = Arena.ofShared();
        MemorySegment segment = address.reinterpret(bytes, arena, s -> unmap(libc, s.address(), bytes));
        return new ArenaMemory(segment.asByteBuffer(), arena);
    }

    private static void unmap(Libc libc, long address, long bytes) {
        try {
            int rc = (int) libc.munmap().invokeExact(MemorySegment.ofAddress(address), bytes);
            if (rc != 0) {
                throw new IllegalStateException("munmap of the page arena failed");
            }
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("munmap through the native linker", t);
        }
    }

    /** The whole memory, position 0, page-aligned. */
    ByteBuffer buffer() {
        return buffer;
    }

    /** Whether this is an anonymous mapping (rather than direct memory). */
    boolean isMapped() {
        return arena != null;
    }

    /** Unmaps a mapping now (direct memory is left to the garbage collector). Idempotent. */
    @Override
    public void close() {
        if (arena != null && arena.scope().isAlive()) {
            arena.close();
        }
    }
}
