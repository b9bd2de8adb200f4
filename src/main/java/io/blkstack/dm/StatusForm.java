package io.blkstack.dm;

/** The two forms of {@code dmsetup status}: counters, and the table line. */
public enum StatusForm {
    /** Run-time state and counters ({@code STATUSTYPE_INFO}). */
    INFO,
    /** The table line that reproduces the loaded target ({@code STATUSTYPE_TABLE}). */
    TABLE
}
