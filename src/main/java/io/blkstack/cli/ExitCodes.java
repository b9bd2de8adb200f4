package io.blkstack.cli;

/**
 * The process exit codes every blkstack command uses (DESIGN.md section 8). Scripts and CI test
 * these numbers, so they never change meaning.
 */
public final class ExitCodes {

    /** The command did what was asked. */
    public static final int SUCCESS = 0;
    /** Bad command line or configuration: nothing was started. */
    public static final int USAGE = 1;
    /** An I/O or runtime error stopped the command. */
    public static final int RUNTIME = 2;
    /** A check or scenario found a deadlock or livelock. */
    public static final int DEADLOCK = 3;

    private ExitCodes() {
    }
}
