package io.blkstack.block;

import io.blkstack.mem.NativeCalls;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.file.Path;

/**
 * The holes of a file device's file, from the file system: {@code lseek(SEEK_HOLE / SEEK_DATA)}
 * answers where data and holes lie, {@code fallocate(PUNCH_HOLE | KEEP_SIZE)} gives a discarded
 * range's space back. The JDK has neither call, so they go through the foreign-function API on a
 * descriptor of the device's own, opened with the device and closed with it (never earlier: on a
 * file system where the JDK's lock is a POSIX record lock, closing any descriptor of the file
 * would drop it).
 *
 * <p>Where the calls are not available (not Linux, the API unusable, or the device opened with
 * {@link FileDevice.Options#withNativeHoles} off) {@link #none} stands in: it knows no holes, and
 * the device keeps its plain-JDK behaviour (every range allocated; zeroing by writing zeros where
 * data is). A file system without {@code SEEK_HOLE} or hole punching is found out on first use
 * and treated the same way from then on.
 *
 * <p>No call here waits for anything but the system call itself, and none allocates on the Java
 * heap or in the arena: {@link #punch} takes the per-task errno buffer of the caller.
 */
final class FileHoles implements AutoCloseable {

    private static final int SEEK_DATA = 3;
    private static final int SEEK_HOLE = 4;
    private static final int O_RDONLY = 0;
    private static final int O_RDWR = 2;
    private static final int O_CLOEXEC = 0x80000;
    private static final int FALLOC_FL_KEEP_SIZE = 1;
    private static final int FALLOC_FL_PUNCH_HOLE = 2;
    private static final int EOPNOTSUPP = 95;
    private static final int ENOSYS = 38;

    /** The libc entry points, bound once per JVM; absent where the platform is not Linux. */
    private record Libc(MethodHandle open, MethodHandle lseek, MethodHandle fallocate, MethodHandle close,
            StructLayout errnoLayout, VarHandle errno) {

        static final Libc INSTANCE = bind();

        private static Libc bind() {
            StructLayout errnoLayout = Linker.Option.captureStateLayout();
            Linker.Option errno = Linker.Option.captureCallState("errno");
            MethodHandle open = NativeCalls.libc("open", FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS,
                    ValueLayout.JAVA_INT, ValueLayout.JAVA_INT), errno, Linker.Option.firstVariadicArg(2));
            MethodHandle lseek = NativeCalls.libc("lseek", FunctionDescriptor.of(ValueLayout.JAVA_LONG,
                    ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT));
            MethodHandle fallocate = NativeCalls.libc("fallocate", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                    ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG), errno);
            MethodHandle close = NativeCalls.libc("close", FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
            if (open == null || lseek == null || fallocate == null || close == null) {
                return null; // no usable native linker (a restricted JVM, an unusual platform): the plain-JDK path
            }
            VarHandle errnoHandle = errnoLayout.varHandle(java.lang.foreign.MemoryLayout.PathElement.groupElement("errno"));
            return new Libc(open, lseek, fallocate, close, errnoLayout, errnoHandle);
        }

        int errno(MemorySegment state) {
            return (int) errno.get(state, 0L);
        }
    }

    private final int fd;
    private final Libc libc;
    private volatile boolean seekWorks = true;
    private volatile boolean punchWorks = true;

    private FileHoles(int fd, Libc libc) {
        this.fd = fd;
        this.libc = libc;
    }

    /** Knows no holes: the plain-JDK behaviour. */
    static FileHoles none() {
        return new FileHoles(-1, null);
    }

    /**
     * A descriptor of {@code path} for hole queries (and punching if {@code writable}), or
     * {@link #none} where the platform has no such calls.
     *
     * @throws IOException if the platform has them and the file cannot be opened
     */
    static FileHoles open(Path path, boolean writable) throws IOException {
        Libc libc = Libc.INSTANCE;
        if (libc == null) {
            return none();
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment name = arena.allocateFrom(path.toString());
            MemorySegment state = arena.allocate(libc.errnoLayout());
            int fd = (int) libc.open().invokeExact(state, name, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
            if (fd < 0) {
                throw new IOException(path + ": open for hole queries failed (errno " + libc.errno(state) + ")");
            }
            return new FileHoles(fd, libc);
        } catch (IOException | RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("open through the native linker", t);
        }
    }

    /** Whether {@link #nextHole} and {@link #nextData} can answer (until the file system says otherwise). */
    boolean knowsHoles() {
        return libc != null && seekWorks;
    }

    /** Whether {@link #punch} may free space (until the file system says otherwise). */
    boolean canPunch() {
        return libc != null && punchWorks;
    }

    /**
     * The first hole at or after {@code offset}, which must be below the file's size (the end of
     * the file counts as a hole); -1 if the file system cannot say, and it is then not asked again.
     */
    long nextHole(long offset) {
        long at = seek(offset, SEEK_HOLE);
        if (at < 0) {
            seekWorks = false;
        }
        return at;
    }

    /**
     * The first data at or after {@code offset}; -1 if there is none before the end of the file
     * (call it only where {@link #nextHole} just answered, so -1 means no data, not "cannot say").
     */
    long nextData(long offset) {
        return seek(offset, SEEK_DATA);
    }

    private long seek(long offset, int whence) {
        if (libc == null) {
            return -1;
        }
        try {
            return (long) libc.lseek().invokeExact(fd, offset, whence);
        } catch (Throwable t) {
            throw new IllegalStateException("lseek through the native linker", t);
        }
    }

    /**
     * Deallocates {@code length} bytes at {@code offset}, keeping the file's size: the range then
     * reads as zeros (partial file-system blocks at its ends are zeroed by the file system).
     *
     * @param errnoState a buffer of {@link #errnoBuffer} the calling task owns
     * @return false if the file system cannot punch holes (then never tried again on this file)
     * @throws IOException if it can and the call failed
     */
    boolean punch(long offset, long length, MemorySegment errnoState) throws IOException {
        if (!canPunch()) {
            return false;
        }
        int rc;
        try {
            rc = (int) libc.fallocate().invokeExact(errnoState, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    offset, length);
        } catch (Throwable t) {
            throw new IllegalStateException("fallocate through the native linker", t);
        }
        if (rc == 0) {
            return true;
        }
        int errno = libc.errno(errnoState);
        if (errno == EOPNOTSUPP || errno == ENOSYS) {
            punchWorks = false;
            return false;
        }
        throw new IOException("punching " + length + " bytes at " + offset + " failed (errno " + errno + ")");
    }

    /** A buffer for {@link #punch}'s errno, one per task that punches, allocated once by its owner. */
    MemorySegment errnoBuffer(Arena arena) {
        return libc == null ? MemorySegment.NULL : arena.allocate(libc.errnoLayout());
    }

    @Override
    public void close() {
        if (libc == null) {
            return;
        }
        try {
            int rc = (int) libc.close().invokeExact(fd);
            if (rc != 0) {
                throw new IllegalStateException("close of hole descriptor " + fd + " failed");
            }
        } catch (RuntimeException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("close through the native linker", t);
        }
    }
}
