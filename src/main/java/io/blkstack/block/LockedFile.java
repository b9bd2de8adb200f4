package io.blkstack.block;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A backing file opened and locked for this process: exclusively by a device that may write it
 * (a second server, or a writable tool, on the same file fails at start), or shared by a tool that
 * only reads it (it fails while a writer holds the file, and readers do not exclude each other
 * across processes). The lock is the operating system's ({@link FileChannel#tryLock}, an
 * {@code fcntl} record lock on Linux), so it ends when the process ends, however it ends.
 *
 * <p>Why a process-wide table of held files: an {@code fcntl} lock belongs to the process, and the
 * operating system drops it when the process closes <em>any</em> descriptor of the file, not just
 * the one that took it. So nothing in this process may open and close a locked file behind its
 * holder's back, and a second open in the same process must be refused before it opens anything.
 * Every holder registers here (keyed by the file's identity: device and inode) before it opens the
 * file, and leaves only after its last descriptor of the file is closed. This table is the one
 * piece of process-wide state in the block layer, because the thing it mirrors is process-wide.
 *
 * <p>The holder's {@link #channel} (and {@link #file}, for sizing) is a normal descriptor of the
 * file: a device that needs more descriptors of the same file opens them after taking the lock and
 * closes them before {@link #close}.
 */
public final class LockedFile implements AutoCloseable {

    /** Files held by this process, by file key; the value is the holder. */
    private static final ConcurrentHashMap<Object, LockedFile> HELD = new ConcurrentHashMap<>();

    private final Path path;
    private final Object key;
    private final boolean shared;
    private final RandomAccessFile file;
    private final FileLock lock;
    private boolean closed;

    private LockedFile(Path path, Object key, boolean shared, RandomAccessFile file, FileLock lock) {
        this.path = path;
        this.key = key;
        this.shared = shared;
        this.file = file;
        this.lock = lock;
    }

    /**
     * Opens {@code path} for reading and writing (creating it, empty, if {@code create} and it is
     * missing) and takes an exclusive lock.
     *
     * @throws FileInUseException if another process, or another holder in this one, has it locked
     * @throws NoSuchFileException if it is missing and {@code create} is false
     */
    public static LockedFile exclusive(Path path, boolean create) throws IOException {
        if (!Files.exists(path)) {
            if (!create) {
                throw new NoSuchFileException(path.toString());
            }
            try {
                Files.createFile(path);
            } catch (java.nio.file.FileAlreadyExistsException e) {
                // created meanwhile by someone else; the lock decides who has it
            }
        }
        return open(path, false);
    }

    /**
     * Opens an existing {@code path} read-only and takes a shared lock: the way a tool that only
     * reads a file (a log, metadata being checked) keeps a writer from starting under it.
     *
     * @throws FileInUseException if a process, or a holder in this one, has it locked for writing
     */
    public static LockedFile shared(Path path) throws IOException {
        if (!Files.exists(path)) {
            throw new NoSuchFileException(path.toString());
        }
        return open(path, true);
    }

    /** Registers, opens and locks; undoes each step if a later one fails. */
    private static LockedFile open(Path path, boolean shared) throws IOException {
        Object key = keyOf(path);
        LockedFile claim = new LockedFile(path, key, shared, null, null);
        LockedFile holder = HELD.putIfAbsent(key, claim);
        if (holder != null) {
            // Held in this process (opening it again would drop the lock): say so, and by what name.
            throw new FileInUseException(path, "in use in this process (already open as " + holder.path + ")");
        }
        RandomAccessFile file = null;
        try {
            try {
                file = new RandomAccessFile(path.toFile(), shared ? "r" : "rw");
            } catch (FileNotFoundException e) {
                throw new IOException(path + ": cannot open: " + e.getMessage(), e);
            }
            FileLock lock;
            try {
                lock = file.getChannel().tryLock(0, Long.MAX_VALUE, shared);
            } catch (OverlappingFileLockException e) {
                lock = null; // locked through a channel this table does not know: same answer
            }
            if (lock == null) {
                throw new FileInUseException(path);
            }
            LockedFile held = new LockedFile(path, key, shared, file, lock);
            if (!HELD.replace(key, claim, held)) {
                throw new IllegalStateException("locked file " + path + ": registration lost while opening");
            }
            return held;
        } catch (IOException | RuntimeException e) {
            if (file != null) {
                try {
                    file.close();
                } catch (IOException suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            HELD.remove(key, claim);
            throw e;
        }
    }

    /** The file's identity (device and inode where the file system has one), else its real path. */
    private static Object keyOf(Path path) throws IOException {
        Object key = Files.readAttributes(path, BasicFileAttributes.class).fileKey();
        return key != null ? key : path.toRealPath();
    }

    /** The locked file's path as opened. */
    public Path path() {
        return path;
    }

    /** Whether the lock is shared (a reader) rather than exclusive. */
    public boolean isShared() {
        return shared;
    }

    /** The descriptor holding the lock: positional reads (and writes, if exclusive) are fine on it. */
    public FileChannel channel() {
        return file.getChannel();
    }

    /** The same descriptor as a {@link RandomAccessFile}, for {@link RandomAccessFile#setLength}. */
    public RandomAccessFile file() {
        return file;
    }

    /** Releases the lock and closes the descriptor; then the file may be locked again. */
    @Override
    public void close() throws IOException {
        if (closed) {
            return;
        }
        closed = true;
        try {
            if (lock.isValid()) {
                lock.release();
            }
        } finally {
            try {
                file.close();
            } finally {
                HELD.remove(key, this);
            }
        }
    }

    @Override
    public String toString() {
        return "locked file " + path + (shared ? " (shared)" : " (exclusive)");
    }

    /** The file is locked by another process, or by another holder in this one. */
    public static final class FileInUseException extends IOException {

        private static final long serialVersionUID = 1L;

        private final transient Path path;

        public FileInUseException(Path path) {
            this(path, "in use (locked by another process)");
        }

        /** {@code path} is {@code why} (such as "in use (locked by another process)"). */
        FileInUseException(Path path, String why) {
            super(path + " is " + why);
            this.path = path;
        }

        /** The same, with a prefix saying where the file was named (such as {@code stack.yaml:4: devices.a.file: }). */
        public FileInUseException(Path path, String where, FileInUseException cause) {
            super(where + cause.getMessage(), cause);
            this.path = path;
        }

        /** The file that is in use. */
        public Path path() {
            return path;
        }
    }
}
