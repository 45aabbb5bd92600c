package rabbit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/oslogo/oslogo/driver"
)

// queueManager is oslo.messaging 18.1's QManager (use_queue_manager): it
// names reply and fanout queues "<hostname>:<processname>:<n>" with a
// counter kept in /dev/shm/<hostname>_<processname>_qmanager as
// "<pgid>:<n>:<start time>", read and written under the external lock
// <lock_path>/oslo_read_shm_<hostname>_<processname> (an fcntl write lock,
// as oslo.concurrency's fasteners lock takes it, so Go and Python
// processes of the same name share it). The counter starts over at 1 when
// the process group or its start time (field 22 of /proc/<pgid>/stat)
// differs from the file's, so a restarted service gets the names it had
// before and RabbitMQ keeps its queues.
type queueManager struct {
	hostname, processname string
	file                  string // the counter
	lock                  string // the lock file
	pg                    int
	startTime             int64
}

// shmDir is where the counter files live (a variable for tests).
var shmDir = "/dev/shm"

// qmLock serialises the counter inside this process: fcntl locks belong
// to the process, and closing any descriptor of the lock file drops them.
var qmLock sync.Mutex

// lockPath is oslo.concurrency's lock_path: the driver options' LockPath
// ([oslo_concurrency] lock_path), else $OSLO_LOCK_PATH, its default.
func lockPath(opts driver.Options) string {
	if opts.LockPath != "" {
		return opts.LockPath
	}
	return os.Getenv("OSLO_LOCK_PATH")
}

func newQueueManager(hostname, processname, lockDir string) (*queueManager, error) {
	if lockDir == "" {
		// oslo.concurrency raises RequiredOptError on the first name; oslogo
		// says so when the driver opens.
		return nil, errors.New("rabbit: use_queue_manager needs [oslo_concurrency] lock_path (or $OSLO_LOCK_PATH) for its external lock, as oslo.messaging 18.1 does")
	}
	pg := syscall.Getpgrp()
	id := pg
	if id == 0 {
		id = os.Getpid()
	}
	st, err := procStartTime(id)
	if errors.Is(err, fs.ErrNotExist) {
		// The group's leader has exited (a shell's background job, a
		// daemon that forked twice): 18.1 fails here. The group id is not
		// reused while a member lives, so it alone marks the run.
		st, err = -1, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rabbit: use_queue_manager: %w", err)
	}
	name := strings.ReplaceAll("oslo_read_shm_"+hostname+"_"+processname, string(os.PathSeparator), "_")
	return &queueManager{
		hostname:    hostname,
		processname: processname,
		file:        filepath.Join(shmDir, hostname+"_"+processname+"_qmanager"),
		lock:        filepath.Join(lockDir, name),
		pg:          pg,
		startTime:   st,
	}, nil
}

// procStartTime reads the start time (in clock ticks since boot) of
// process pid: field 22 of /proc/<pid>/stat, counted after the command
// name, which may hold spaces.
func procStartTime(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s) // from field 3 on
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	return strconv.ParseInt(f[19], 10, 64)
}

// get returns the next name, "<hostname>:<processname>:<n>".
func (q *queueManager) get() (string, error) {
	n, err := q.next()
	if err != nil {
		return "", fmt.Errorf("rabbit: use_queue_manager: %w", err)
	}
	return q.hostname + ":" + q.processname + ":" + strconv.Itoa(n), nil
}

func (q *queueManager) next() (int, error) {
	qmLock.Lock()
	defer qmLock.Unlock()
	lf, err := os.OpenFile(q.lock, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer lf.Close() // drops the lock
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	for {
		err = syscall.FcntlFlock(lf.Fd(), syscall.F_SETLKW, &lk)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("lock %s: %w", q.lock, err)
	}
	pg, counter, start := q.pg, 0, q.startTime
	b, err := os.ReadFile(q.file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, err
	default:
		if p, c, s, ok := parseCounter(string(b)); ok {
			pg, counter, start = p, c, s
		}
	}
	if pg == q.pg && start == q.startTime {
		counter++
	} else {
		counter = 1 // another process group or a new one: a restart
	}
	data := strconv.Itoa(q.pg) + ":" + strconv.Itoa(counter) + ":" + strconv.FormatInt(q.startTime, 10)
	if err := os.WriteFile(q.file, []byte(data), 0o644); err != nil {
		return 0, err
	}
	return counter, nil
}

// parseCounter reads "<pg>:<counter>:<start time>" from the first line as
// Python's int() does (surrounding space allowed); ok is false where
// oslo's ValueError starts the counter over.
func parseCounter(s string) (pg, counter int, start int64, ok bool) {
	line, _, _ := strings.Cut(s, "\n")
	parts := strings.Split(line, ":")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	pg, err1 = strconv.Atoi(strings.TrimSpace(parts[0]))
	counter, err2 = strconv.Atoi(strings.TrimSpace(parts[1]))
	start, err3 = strconv.ParseInt(strings.TrimSpace(parts[2]), 10, 64)
	return pg, counter, start, err1 == nil && err2 == nil && err3 == nil
}
