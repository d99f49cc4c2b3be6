package demo

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"math/big"
	"sort"
	"strings"
	"time"
)

// DefaultAuthority is the simulated hospital's patient id authority (HL7
// PID-3 CX-4 and DICOM Issuer of Patient ID).
const DefaultAuthority = "DEMOHOSP"

// PACS sends a study's images to radbridge. The package uses it one call at
// a time.
type PACS interface {
	// Store sends one instance (C-STORE).
	Store(ctx context.Context, in Instance) error
	// NotifyAvailable tells that the study's instances are available (an
	// Instance Availability Notification).
	NotifyAvailable(ctx context.Context, study Study) error
}

// Study is a study the PACS sent.
type Study struct {
	UID, Accession, PatientID, Issuer string
	Instances                         []Instance
}

// Patient is a synthetic patient.
type Patient struct {
	ID, Name, BirthDate, Sex string
}

// Exam is one ordered imaging exam of a cycle.
type Exam struct {
	Patient      Patient
	Accession    string
	PlacerNumber string
	Modality     string
	Code, Name   string // CPT code and description (OBR-4)
	Section      string // OBR-24
	BodyPart     string
	Series       []Series
	Stat         bool
	Critical     bool   // the final report carries an HH flag
	Reason       string // OBR-13
	Prelim       string
	Final        []string
}

// Series is one series of an exam's study.
type Series struct {
	Description string
	Instances   int
}

// Instances is the number of instances the exam's study has.
func (e Exam) Instances() int {
	n := 0
	for _, s := range e.Series {
		n += s.Instances
	}
	return n
}

var names = []string{"ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL"}

var exams = []Exam{
	{Modality: "CT", Code: "71250", Name: "CT CHEST W/O CONTRAST", Section: "CT", BodyPart: "CHEST",
		Series: []Series{{"SCOUT", 1}, {"AXIAL 5MM", 6}, {"CORONAL MPR", 4}},
		Reason: "Persistent cough",
		Prelim: "PRELIMINARY: No acute cardiopulmonary abnormality.",
		Final:  []string{"FINDINGS: Lungs are clear. No pleural effusion. Heart size normal.", "IMPRESSION: No acute abnormality."}},
	{Modality: "MR", Code: "70553", Name: "MR BRAIN W/WO CONTRAST", Section: "MR", BodyPart: "HEAD",
		Series: []Series{{"AX T2 FLAIR", 4}, {"AX DWI", 3}, {"AX T1 POST", 4}},
		Reason: "Headache, new onset",
		Prelim: "PRELIMINARY: Findings under review.",
		Final:  []string{"FINDINGS: 9 mm enhancing lesion in the left frontal lobe with surrounding edema.", "IMPRESSION: Enhancing intracranial lesion. Critical result communicated."}},
	{Modality: "CR", Code: "71046", Name: "CR CHEST 2 VIEWS", Section: "CR", BodyPart: "CHEST",
		Series: []Series{{"PA", 1}, {"LATERAL", 1}},
		Reason: "Shortness of breath",
		Prelim: "PRELIMINARY: No focal consolidation.",
		Final:  []string{"FINDINGS: No focal consolidation, effusion or pneumothorax.", "IMPRESSION: Normal chest radiograph."}},
	{Modality: "US", Code: "76700", Name: "US ABDOMEN COMPLETE", Section: "US", BodyPart: "ABDOMEN",
		Series: []Series{{"LIVER GALLBLADDER", 3}, {"KIDNEYS", 2}},
		Reason: "Right upper quadrant pain",
		Prelim: "PRELIMINARY: Gallstones without sonographic signs of cholecystitis.",
		Final:  []string{"FINDINGS: Multiple mobile gallstones. No gallbladder wall thickening. Kidneys normal.", "IMPRESSION: Cholelithiasis without cholecystitis."}},
}

// Patients returns n synthetic patients (names are obviously synthetic).
func Patients(n int) []Patient {
	out := make([]Patient, n)
	for i := range out {
		name := names[i%len(names)]
		if i >= len(names) {
			name += fmt.Sprint(i / len(names))
		}
		sex := "F"
		if i%2 == 1 {
			sex = "M"
		}
		out[i] = Patient{
			ID:        fmt.Sprintf("DEMO%04d", 1001+i),
			Name:      "SYNTHETIC^" + name + "^TEST",
			BirthDate: fmt.Sprintf("19%02d0%d1%d", 50+i*7%45, 1+i%9, i%10),
			Sex:       sex,
		}
	}
	return out
}

// Plan is the exams of cycle (from 0) for n patients: one each, modalities
// in turn (CT, MR, CR, US). The first is STAT; the second's final report is
// critical (HH). The last patient also has an order that is cancelled
// (CancelledExam).
func Plan(n, cycle int) []Exam { return PlanRun("", n, cycle) }

// PlanRun is Plan for the run named run (NewRunID): its accession and
// placer numbers hold the run's name, so that a second run on the same
// daemon is new data, not a resend of the first.
func PlanRun(run string, n, cycle int) []Exam {
	var out []Exam
	for i, p := range Patients(n) {
		e := exams[i%len(exams)]
		e.Patient = p
		e.Accession = accession(run, "A", cycle, 1001+i)
		e.PlacerNumber = accession(run, "P", cycle, 1001+i)
		e.Stat = i == 0
		e.Critical = i == 1 || n == 1
		out = append(out, e)
	}
	return out
}

// CancelledExam is the order of cycle that is placed and then cancelled.
func CancelledExam(n, cycle int) Exam { return CancelledExamRun("", n, cycle) }

// CancelledExamRun is CancelledExam for the run named run.
func CancelledExamRun(run string, n, cycle int) Exam {
	ps := Patients(n)
	return Exam{
		Patient:      ps[len(ps)-1],
		Accession:    accession(run, "A", cycle, 9001),
		PlacerNumber: accession(run, "P", cycle, 9001),
		Modality:     "CT", Code: "74177", Name: "CT ABDOMEN PELVIS W CONTRAST", Section: "CT", BodyPart: "ABDOMEN",
		Reason: "Abdominal pain",
	}
}

// accession is an accession (kind A) or placer (kind P) number: DA0001001
// without a run, DAK7Q2001001 (at most 16 characters, DICOM SH) with one.
func accession(run, kind string, cycle, n int) string {
	if run == "" {
		return fmt.Sprintf("D%s%03d%04d", kind, cycle, n)
	}
	return fmt.Sprintf("D%s%s%02d%04d", kind, run, cycle%100, n)
}

// NewRunID names a run of the simulation: four random characters of
// [0-9A-Z], so that each run sends new control ids and accession numbers.
func NewRunID() string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 4)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(digits))))
		if err != nil {
			panic(err)
		}
		b[i] = digits[n.Int64()]
	}
	return string(b)
}

// Config configures a simulation.
type Config struct {
	RIS       *RIS
	PACS      PACS // nil: no images
	Speed     float64
	Patients  int
	Loop      bool
	Authority string
	Log       *slog.Logger
	// Run names this run (NewRunID) in control ids and accession numbers;
	// empty: the fixed names of Plan (a second run repeats the first's).
	Run string
}

// StepReporter is a PACS that also reports Modality Performed Procedure
// Steps (N-CREATE, N-SET): the modality says which instances a study will
// have, so a receiver can show "45/120" while they arrive.
type StepReporter interface {
	// PerformedStep creates (create) or completes the step named uid of the
	// study; a completed step lists every instance of the study.
	PerformedStep(ctx context.Context, uid string, study Study, create bool) error
}

type step struct {
	at   time.Duration
	what string
	exam *Exam
	do   func(ctx context.Context) error
}

// Run runs the simulation: one cycle of about a minute at speed 1, or
// cycles until ctx ends with Loop. Steps that fail are logged and skipped.
func Run(ctx context.Context, c Config) error {
	if c.Speed <= 0 {
		c.Speed = 1
	}
	if c.Patients <= 0 {
		c.Patients = 4
	}
	if c.Authority == "" {
		c.Authority = DefaultAuthority
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	log := c.Log.With("component", "demo")
	for cycle := 0; ; cycle++ {
		steps := c.steps(cycle)
		start := time.Now()
		for _, s := range steps {
			wait := time.Until(start.Add(time.Duration(float64(s.at) / c.Speed)))
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
			if err := s.do(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				log.Warn("simulated step failed", "step", s.what, "patient_id", s.exam.Patient.ID, "accession", s.exam.Accession, "err", err)
				continue
			}
			log.Info("simulated "+s.what, "patient_id", s.exam.Patient.ID, "accession", s.exam.Accession, "modality", s.exam.Modality)
		}
		log.Info("simulation cycle done", "cycle", cycle+1)
		if !c.Loop {
			return nil
		}
	}
}

func (c Config) steps(cycle int) []step {
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	var steps []step
	ctl := 0
	send := func(at float64, what string, e *Exam, msg func(ctl string) string) {
		ctl++
		id := fmt.Sprintf("DEMO%s%03d%04d", c.Run, cycle, ctl)
		steps = append(steps, step{at: sec(at), what: what, exam: e, do: func(ctx context.Context) error {
			return c.RIS.Send(ctx, []byte(msg(id)), id)
		}})
	}
	plan := PlanRun(c.Run, c.Patients, cycle)
	spread := 40.0 / float64(len(plan))
	for i := range plan {
		e := &plan[i]
		t0 := float64(i) * spread
		send(t0, "RIS order (ORM^O01 NW)", e, func(id string) string { return c.order(e, id, "NW", "SC") })
		send(t0+2, "RIS status change (ORM^O01 XO IP)", e, func(id string) string { return c.order(e, id, "XO", "IP") })
		if c.PACS != nil {
			study := c.study(e)
			for j := range study.Instances {
				in := study.Instances[j]
				steps = append(steps, step{at: sec(t0 + 4 + 0.4*float64(j)), what: "PACS C-STORE " + in.Modality + " instance", exam: e,
					do: func(ctx context.Context) error { return c.PACS.Store(ctx, in) }})
			}
			if i == 0 {
				steps = append(steps, step{at: sec(t0 + 5 + 0.4*float64(len(study.Instances))), what: "PACS instance availability notification (N-CREATE)", exam: e,
					do: func(ctx context.Context) error { return c.PACS.NotifyAvailable(ctx, study) }})
			}
			// The modality of every other exam reports its performed
			// step: in progress before the first image, completed (with
			// the list of its images) after the second, so the images
			// still arriving are counted against the total.
			if r, ok := c.PACS.(StepReporter); ok && i%2 == 1 && len(study.Instances) > 2 {
				uid := newUID()
				steps = append(steps,
					step{at: sec(t0 + 3.9), what: "modality performed procedure step in progress (MPPS N-CREATE)", exam: e,
						do: func(ctx context.Context) error { return r.PerformedStep(ctx, uid, study, true) }},
					step{at: sec(t0 + 4.5 + 0.4), what: "modality performed procedure step completed (MPPS N-SET)", exam: e,
						do: func(ctx context.Context) error { return r.PerformedStep(ctx, uid, study, false) }})
			}
		}
		send(t0+14, "RIS preliminary report (ORU^R01 P)", e, func(id string) string { return c.report(e, id, "P") })
		send(t0+25, "RIS final report (ORU^R01 F)", e, func(id string) string { return c.report(e, id, "F") })
	}
	x := CancelledExamRun(c.Run, c.Patients, cycle)
	tx := float64(len(plan)-1) * spread
	send(tx+1, "RIS order (ORM^O01 NW)", &x, func(id string) string { return c.order(&x, id, "NW", "SC") })
	send(tx+6, "RIS cancellation (ORM^O01 CA)", &x, func(id string) string { return c.order(&x, id, "CA", "CA") })
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].at < steps[j].at })
	return steps
}

func now() string { return time.Now().Format("20060102150405") }

func (c Config) header(id, typ string, e *Exam) string {
	p := e.Patient
	return fmt.Sprintf("MSH|^~\\&|DEMORIS|%[1]s|RADBRIDGE|IMAGING|%[2]s||%[3]s|%[4]s|P|2.5.1|||||D|UNICODE UTF-8\rPID|1||%[5]s^^^%[1]s^MR||%[6]s||%[7]s|%[8]s\r",
		c.Authority, now(), typ, id, p.ID, p.Name, p.BirthDate, p.Sex)
}

func (c Config) order(e *Exam, id, control, status string) string {
	prio := "R"
	if e.Stat {
		prio = "S"
	}
	ts := now()
	return c.header(id, "ORM^O01", e) +
		fmt.Sprintf("PV1|1|O|RAD^^^%s\r", c.Authority) +
		fmt.Sprintf("ORC|%s|%s|F%s||%s||^^^%s^^%s||%s|CLERK^RIS||1234^REFERRER^SAM^^^DR\r", control, e.PlacerNumber, e.Accession, status, ts, prio, ts) +
		fmt.Sprintf("OBR|1|%s|F%s|%s^%s^C4|%s||%s||||||%s|||1234^REFERRER^SAM^^^DR||%s|RP1|SPS1||||%s|||1^^^%s^^%s\r",
			e.PlacerNumber, e.Accession, e.Code, e.Name, prio, ts, e.Reason, e.Accession, e.Section, ts, prio)
}

func (c Config) report(e *Exam, id, status string) string {
	orc, reader, lines := "IP", "5555&RESIDENT&RIA", []string{e.Prelim}
	if status == "F" {
		orc, reader, lines = "CM", "3333&RADIOLOGIST&PAT", e.Final
	}
	ts := now()
	var b strings.Builder
	b.WriteString(c.header(id, "ORU^R01^ORU_R01", e))
	fmt.Fprintf(&b, "ORC|RE|%s|F%s||%s\r", e.PlacerNumber, e.Accession, orc)
	fmt.Fprintf(&b, "OBR|1|%s|F%s|%s^%s^C4|||%s|||||||||1234^REFERRER^SAM^^^DR||%s|RP1|SPS1||%s||%s|%s|||||||%s\r",
		e.PlacerNumber, e.Accession, e.Code, e.Name, ts, e.Accession, ts, e.Section, status, reader)
	for i, l := range lines {
		flag := ""
		if status == "F" && e.Critical && i == len(lines)-1 {
			flag = "HH"
		}
		fmt.Fprintf(&b, "OBX|%d|TX|RPT^Report^L|%d|%s|||%s|||%s\r", i+1, i+1, l, flag, status)
	}
	return b.String()
}

// study makes the exam's synthetic instances with fresh UIDs.
func (c Config) study(e *Exam) Study {
	uid := newUID()
	st := Study{UID: uid, Accession: e.Accession, PatientID: e.Patient.ID, Issuer: c.Authority}
	date, tm, _ := strings.Cut(time.Now().Format("20060102 150405"), " ")
	for s, ser := range e.Series {
		for i := 1; i <= ser.Instances; i++ {
			st.Instances = append(st.Instances, Instance{
				SOPClassUID: SOPClass(e.Modality), SOPInstanceUID: fmt.Sprintf("%s.%d.%d", uid, s+1, i),
				StudyUID: uid, SeriesUID: fmt.Sprintf("%s.%d", uid, s+1),
				PatientID: e.Patient.ID, Issuer: c.Authority, PatientName: e.Patient.Name,
				BirthDate: e.Patient.BirthDate, Sex: e.Patient.Sex,
				Accession: e.Accession, StudyDate: date, StudyTime: tm, StudyID: "1",
				Modality: e.Modality, BodyPart: e.BodyPart, StudyDescription: e.Name,
				SeriesDescription: ser.Description, SeriesNumber: s + 1, InstanceNumber: i,
				Rows: 64, Columns: 64,
			})
		}
	}
	return st
}

// newUID is a UUID-derived UID (PS3.5 section B.2).
func newUID() string {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return "2.25." + n.String()
}
