package io.blkstack.remote;

import io.blkstack.Programs;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * An nbdkit server for tests, on a Unix socket. It is started in the background mode, whose
 * launcher exits only once the socket listens (so readiness is the launcher's exit, not a poll),
 * and its pid file lets {@link #kill} end it; {@link #close} kills it if it still runs.
 */
final class Nbdkit implements AutoCloseable {

    private static final long START_SECONDS_MAX = 30;

    private final Path socket;
    private final Path pidFile;
    private final List<String> plugin;
    private long pid = -1;

    /** A server for {@code plugin} (such as {@code memory 64M}) on {@code socket}; not started. */
    Nbdkit(Path socket, String... plugin) {
        this.socket = socket;
        this.pidFile = socket.resolveSibling(socket.getFileName() + ".pid");
        this.plugin = List.of(plugin);
    }

    /** Whether nbdkit is on PATH. */
    static boolean installed() {
        return Programs.installed("nbdkit");
    }

    /** Starts the server and returns once it listens. */
    Nbdkit start() throws IOException, InterruptedException {
        if (pid > 0) {
            throw new IllegalStateException("nbdkit on " + socket + " already runs as " + pid);
        }
        Files.deleteIfExists(pidFile);
        Files.deleteIfExists(socket); // a killed server leaves its socket behind
        List<String> command = new ArrayList<>(List.of("nbdkit", "-U", socket.toString(), "-P", pidFile.toString()));
        command.addAll(plugin);
        Process launcher = new ProcessBuilder(command).redirectErrorStream(true).start();
        if (!launcher.waitFor(START_SECONDS_MAX, TimeUnit.SECONDS)) {
            launcher.destroyForcibly();
            throw new IOException("nbdkit did not start within " + START_SECONDS_MAX + " s");
        }
        String output = new String(launcher.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (launcher.exitValue() != 0) {
            throw new IOException("nbdkit failed: " + output);
        }
        pid = awaitPid();
        return this;
    }

    /**
     * The daemon's pid from its pid file, which the daemon writes after the launcher exits: waits
     * for the file's creation or change events (inotify), bounded.
     */
    private long awaitPid() throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(START_SECONDS_MAX);
        try (WatchService watcher = pidFile.getFileSystem().newWatchService()) {
            pidFile.getParent().register(watcher, StandardWatchEventKinds.ENTRY_CREATE,
                    StandardWatchEventKinds.ENTRY_MODIFY);
            while (true) {
                long pidRead = readPid();
                if (pidRead > 0) {
                    return pidRead;
                }
                long left = deadline - System.nanoTime();
                WatchKey key = left > 0 ? watcher.poll(left, TimeUnit.NANOSECONDS) : null;
                if (key == null) {
                    throw new IOException("nbdkit wrote no pid file " + pidFile + " within " + START_SECONDS_MAX + " s");
                }
                key.pollEvents();
                key.reset();
            }
        }
    }

    /** The pid in the pid file, or -1 if it is not (fully) written yet. */
    private long readPid() throws IOException {
        try {
            String text = Files.readString(pidFile);
            return text.endsWith("\n") ? Long.parseLong(text.trim()) : -1;
        } catch (java.nio.file.NoSuchFileException | NumberFormatException e) {
            return -1;
        }
    }

    /** Kills the server (SIGKILL: no goodbye to its clients) and waits until it is gone. */
    void kill() throws InterruptedException {
        if (pid <= 0) {
            return;
        }
        var handle = ProcessHandle.of(pid);
        pid = -1;
        if (handle.isPresent()) {
            handle.get().destroyForcibly();
            handle.get().onExit().orTimeout(START_SECONDS_MAX, TimeUnit.SECONDS).join();
        }
    }

    /** The URI of its default export. */
    String uri() {
        return "nbd+unix:///?socket=" + socket;
    }

    Path socket() {
        return socket;
    }

    @Override
    public void close() throws InterruptedException {
        kill();
    }
}
