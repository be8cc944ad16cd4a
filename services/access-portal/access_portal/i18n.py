"""The portal's words in French, German, Italian and English (French when unsure)."""

from __future__ import annotations

LANGUAGES = ("fr", "de", "it", "en")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your secure message",
        "intro": "{hospital} has sent you a secure message.",
        "number_prompt": "To open it, type your mobile number. We will send you a code by SMS.",
        "number_hint": "The number we have on file looks like this: {hint}",
        "number_label": "Mobile number",
        "number_example": "For example 079 123 45 67",
        "send_code": "Send me a code by SMS",
        "bound_prompt": "We will send a code by SMS to your number {hint}.",
        "code_title": "Enter your code",
        "code_sent": "We have sent a 6-digit code by SMS to {hint}. It is valid for 10 minutes.",
        "code_label": "Code received by SMS",
        "verify": "Open my message",
        "new_code": "Send a new code",
        "wrong_code": "This code is not correct. Tries left: {n}.",
        "code_format": "Type the 6 digits of the code you received by SMS.",
        "doc_title": "Your convocation",
        "doc_intro": "Your letter is ready. Keep it; you may need it on the day.",
        "download_pdf": "Download the letter (PDF)",
        "download_ics": "Add to my calendar (.ics)",
        "logout": "Log out",
        "help": "Questions, or a change of date or delivery? Call the secretariat at {phone}.",
        "help_email": "or write to {email}",
        "no_js": "This page needs JavaScript to open your document.",
        "unknown.title": "Link not recognised",
        "unknown.text": "This link does not lead to any message. Check that you copied the whole link from "
                        "the e-mail, or contact the secretariat that sent you the appointment.",
        "expired.title": "This message has expired",
        "expired.text": "Messages are kept until shortly after the appointment and then destroyed. Contact the "
                        "secretariat if you need a copy of your letter.",
        "cancelled.title": "This appointment was cancelled",
        "cancelled.text": "The hospital cancelled this convocation. The secretariat can tell you more.",
        "withdrawn.title": "This letter was withdrawn",
        "withdrawn.text": "The department's secretariat withdrew this letter. Call the secretariat to know more.",
        "superseded.title": "This message was replaced",
        "superseded.text": "A newer message was sent to you for this appointment. Open the link in the most "
                           "recent e-mail.",
        "code_expired.title": "Your code has expired",
        "code_expired.text": "Codes are valid for 10 minutes and can be used once. Ask for a new code.",
        "wait.title": "Please wait before trying again",
        "wait.text": "For your security, no new code can be sent or checked before {until} (Swiss time).",
        "sms_failed.title": "The SMS could not be delivered",
        "sms_failed.text": "We could not deliver the code to your phone. Check that it is switched on and can "
                           "receive SMS, then ask for a new code, or call the secretariat.",
        "link_incomplete.title": "Open the link from your e-mail again",
        "link_incomplete.text": "Part of the link is missing, so your document cannot be opened. Click the link "
                                "in the e-mail again (or copy all of it into the address bar).",
        "number_invalid.title": "This is not a valid mobile number",
        "number_invalid.text": "Type your mobile number, for example 079 123 45 67 or +41 79 123 45 67.",
        "session_expired.title": "Your session has ended",
        "session_expired.text": "For your security, sessions end after 15 minutes without activity. Open the "
                                "link from your e-mail again and ask for a new code.",
        "bad_request.title": "This form has expired",
        "bad_request.text": "Go back to the link in your e-mail and try again.",
        "not_my_number": "This is not my number",
        "code_missing": "No SMS after a minute? Codes only go to the number the hospital has on file for you. If "
                        "the number shown is not yours, call the secretariat.",
        "not_my_number.title": "This is not your number?",
        "not_my_number.text": "Do not ask for a code: it would go to this number. Call the secretariat at {phone}; "
                              "they will check the number the hospital has for you and can send your letter "
                              "another way.",
        "back": "Back to my message",
    },
    "fr": {
        "title": "Votre message sécurisé",
        "intro": "{hospital} vous a envoyé un message sécurisé.",
        "number_prompt": "Pour l’ouvrir, saisissez votre numéro de portable. Nous vous enverrons un code par SMS.",
        "number_hint": "Le numéro que nous connaissons ressemble à ceci : {hint}",
        "number_label": "Numéro de portable",
        "number_example": "Par exemple 079 123 45 67",
        "send_code": "M’envoyer un code par SMS",
        "bound_prompt": "Nous enverrons un code par SMS à votre numéro {hint}.",
        "code_title": "Saisissez votre code",
        "code_sent": "Nous avons envoyé un code à 6 chiffres par SMS au {hint}. Il est valable 10 minutes.",
        "code_label": "Code reçu par SMS",
        "verify": "Ouvrir mon message",
        "new_code": "Recevoir un nouveau code",
        "wrong_code": "Ce code n’est pas correct. Essais restants : {n}.",
        "code_format": "Saisissez les 6 chiffres du code reçu par SMS.",
        "doc_title": "Votre convocation",
        "doc_intro": "Votre convocation est prête. Conservez-la ; elle peut vous être demandée le jour venu.",
        "download_pdf": "Télécharger la convocation (PDF)",
        "download_ics": "Ajouter à mon agenda (.ics)",
        "logout": "Me déconnecter",
        "help": "Une question, un changement de date ou de mode d’envoi ? Appelez le secrétariat au {phone}.",
        "help_email": "ou écrivez à {email}",
        "no_js": "Cette page a besoin de JavaScript pour ouvrir votre document.",
        "unknown.title": "Lien non reconnu",
        "unknown.text": "Ce lien ne mène à aucun message. Vérifiez que vous avez copié tout le lien de l’e-mail, "
                        "ou contactez le secrétariat qui vous a convoqué.",
        "expired.title": "Ce message a expiré",
        "expired.text": "Les messages sont conservés jusqu’à peu après le rendez-vous, puis détruits. Contactez "
                        "le secrétariat si vous avez besoin d’une copie de votre convocation.",
        "cancelled.title": "Ce rendez-vous a été annulé",
        "cancelled.text": "L’hôpital a annulé cette convocation. Le secrétariat peut vous renseigner.",
        "withdrawn.title": "Cette convocation a été retirée",
        "withdrawn.text": "Le secrétariat du service a retiré cette convocation. Appelez le secrétariat pour en "
                          "savoir plus.",
        "superseded.title": "Ce message a été remplacé",
        "superseded.text": "Un message plus récent vous a été envoyé pour ce rendez-vous. Ouvrez le lien du "
                           "dernier e-mail reçu.",
        "code_expired.title": "Votre code a expiré",
        "code_expired.text": "Un code est valable 10 minutes et ne sert qu’une fois. Demandez un nouveau code.",
        "wait.title": "Veuillez patienter avant de réessayer",
        "wait.text": "Pour votre sécurité, aucun code ne peut être envoyé ou vérifié avant {until} (heure suisse).",
        "sms_failed.title": "Le SMS n’a pas pu être remis",
        "sms_failed.text": "Le code n’a pas pu être remis à votre téléphone. Vérifiez qu’il est allumé et peut "
                           "recevoir des SMS, puis demandez un nouveau code, ou appelez le secrétariat.",
        "link_incomplete.title": "Rouvrez le lien de votre e-mail",
        "link_incomplete.text": "Une partie du lien manque : votre document ne peut pas être ouvert. Cliquez à "
                                "nouveau sur le lien de l’e-mail (ou copiez-le en entier dans la barre d’adresse).",
        "number_invalid.title": "Ce numéro de portable n’est pas valide",
        "number_invalid.text": "Saisissez votre numéro de portable, par exemple 079 123 45 67 ou +41 79 123 45 67.",
        "session_expired.title": "Votre session est terminée",
        "session_expired.text": "Pour votre sécurité, une session se termine après 15 minutes d’inactivité. "
                                "Rouvrez le lien de votre e-mail et demandez un nouveau code.",
        "bad_request.title": "Ce formulaire a expiré",
        "bad_request.text": "Revenez au lien de votre e-mail et réessayez.",
        "not_my_number": "Ce n’est pas mon numéro",
        "code_missing": "Pas de SMS après une minute ? Les codes ne partent qu’au numéro que l’hôpital connaît "
                        "pour vous. Si le numéro indiqué n’est pas le vôtre, appelez le secrétariat.",
        "not_my_number.title": "Ce n’est pas votre numéro ?",
        "not_my_number.text": "Ne demandez pas de code : il partirait à ce numéro. Appelez le secrétariat au "
                              "{phone} ; il vérifiera le numéro que l’hôpital connaît pour vous et peut vous "
                              "faire parvenir votre lettre autrement.",
        "back": "Retour à mon message",
    },
    "de": {
        "title": "Ihre sichere Nachricht",
        "intro": "{hospital} hat Ihnen eine sichere Nachricht gesendet.",
        "number_prompt": "Um sie zu öffnen, geben Sie Ihre Mobilnummer ein. Wir senden Ihnen einen Code per SMS.",
        "number_hint": "Die bei uns hinterlegte Nummer sieht so aus: {hint}",
        "number_label": "Mobilnummer",
        "number_example": "Zum Beispiel 079 123 45 67",
        "send_code": "Code per SMS anfordern",
        "bound_prompt": "Wir senden Ihnen einen Code per SMS an Ihre Nummer {hint}.",
        "code_title": "Geben Sie Ihren Code ein",
        "code_sent": "Wir haben Ihnen einen 6-stelligen Code per SMS an {hint} gesendet. Er ist 10 Minuten gültig.",
        "code_label": "Per SMS erhaltener Code",
        "verify": "Meine Nachricht öffnen",
        "new_code": "Neuen Code anfordern",
        "wrong_code": "Dieser Code ist nicht korrekt. Verbleibende Versuche: {n}.",
        "code_format": "Geben Sie die 6 Ziffern des Codes ein, den Sie per SMS erhalten haben.",
        "doc_title": "Ihr Aufgebot",
        "doc_intro": "Ihr Aufgebot ist bereit. Bewahren Sie es auf; Sie benötigen es möglicherweise am Tag des "
                     "Termins.",
        "download_pdf": "Aufgebot herunterladen (PDF)",
        "download_ics": "In meinen Kalender eintragen (.ics)",
        "logout": "Abmelden",
        "help": "Haben Sie Fragen oder möchten Sie das Datum oder die Versandart ändern? Rufen Sie das "
                "Sekretariat unter {phone} an.",
        "help_email": "oder schreiben Sie an {email}",
        "no_js": "Diese Seite benötigt JavaScript, um Ihr Dokument zu öffnen.",
        "unknown.title": "Link nicht erkannt",
        "unknown.text": "Dieser Link führt zu keiner Nachricht. Prüfen Sie, ob Sie den ganzen Link aus der E-Mail "
                        "kopiert haben, oder wenden Sie sich an das Sekretariat, von dem Sie das Aufgebot erhalten "
                        "haben.",
        "expired.title": "Diese Nachricht ist abgelaufen",
        "expired.text": "Nachrichten werden bis kurz nach dem Termin aufbewahrt und danach gelöscht. Wenden Sie "
                        "sich an das Sekretariat, wenn Sie eine Kopie Ihres Aufgebots benötigen.",
        "cancelled.title": "Dieser Termin wurde abgesagt",
        "cancelled.text": "Das Spital hat dieses Aufgebot annulliert. Das Sekretariat gibt Ihnen gerne Auskunft.",
        "withdrawn.title": "Dieses Aufgebot wurde zurückgezogen",
        "withdrawn.text": "Das Sekretariat der Abteilung hat dieses Aufgebot zurückgezogen. Rufen Sie das "
                          "Sekretariat an, um mehr zu erfahren.",
        "superseded.title": "Diese Nachricht wurde ersetzt",
        "superseded.text": "Für diesen Termin wurde Ihnen eine neuere Nachricht gesendet. Öffnen Sie den Link in "
                           "der neuesten E-Mail.",
        "code_expired.title": "Ihr Code ist abgelaufen",
        "code_expired.text": "Ein Code ist 10 Minuten gültig und kann nur einmal verwendet werden. Fordern Sie "
                             "einen neuen Code an.",
        "wait.title": "Bitte warten Sie, bevor Sie es erneut versuchen",
        "wait.text": "Zu Ihrer Sicherheit kann erst ab {until} (Schweizer Zeit) wieder ein Code gesendet oder "
                     "geprüft werden.",
        "sms_failed.title": "Die SMS konnte nicht zugestellt werden",
        "sms_failed.text": "Wir konnten den Code nicht an Ihr Telefon senden. Prüfen Sie, ob es eingeschaltet ist "
                           "und SMS empfangen kann, und fordern Sie dann einen neuen Code an, oder rufen Sie das "
                           "Sekretariat an.",
        "link_incomplete.title": "Öffnen Sie den Link aus Ihrer E-Mail erneut",
        "link_incomplete.text": "Ein Teil des Links fehlt, daher kann Ihr Dokument nicht geöffnet werden. Klicken "
                                "Sie erneut auf den Link in der E-Mail (oder kopieren Sie ihn vollständig in die "
                                "Adresszeile).",
        "number_invalid.title": "Dies ist keine gültige Mobilnummer",
        "number_invalid.text": "Geben Sie Ihre Mobilnummer ein, zum Beispiel 079 123 45 67 oder +41 79 123 45 67.",
        "session_expired.title": "Ihre Sitzung ist abgelaufen",
        "session_expired.text": "Zu Ihrer Sicherheit endet eine Sitzung nach 15 Minuten ohne Aktivität. Öffnen "
                                "Sie den Link aus Ihrer E-Mail erneut und fordern Sie einen neuen Code an.",
        "bad_request.title": "Dieses Formular ist abgelaufen",
        "bad_request.text": "Öffnen Sie den Link in Ihrer E-Mail erneut und versuchen Sie es noch einmal.",
        "not_my_number": "Das ist nicht meine Nummer",
        "code_missing": "Nach einer Minute keine SMS? Codes gehen nur an die Nummer, die beim Spital für Sie "
                        "hinterlegt ist. Ist die angezeigte Nummer nicht Ihre, rufen Sie das Sekretariat an.",
        "not_my_number.title": "Das ist nicht Ihre Nummer?",
        "not_my_number.text": "Fordern Sie keinen Code an: Er ginge an diese Nummer. Rufen Sie das Sekretariat "
                              "unter {phone} an; es prüft die beim Spital hinterlegte Nummer und kann Ihnen Ihren "
                              "Brief auf anderem Weg zukommen lassen.",
        "back": "Zurück zu meiner Nachricht",
    },
    "it": {
        "title": "Il Suo messaggio sicuro",
        "intro": "{hospital} Le ha inviato un messaggio sicuro.",
        "number_prompt": "Per aprirlo, inserisca il Suo numero di cellulare. Le invieremo un codice via SMS.",
        "number_hint": "Il numero registrato presso di noi si presenta così: {hint}",
        "number_label": "Numero di cellulare",
        "number_example": "Ad esempio 079 123 45 67",
        "send_code": "Ricevere un codice via SMS",
        "bound_prompt": "Le invieremo un codice via SMS al Suo numero {hint}.",
        "code_title": "Inserisca il Suo codice",
        "code_sent": "Le abbiamo inviato via SMS un codice di 6 cifre al numero {hint}. È valido 10 minuti.",
        "code_label": "Codice ricevuto via SMS",
        "verify": "Aprire il mio messaggio",
        "new_code": "Ricevere un nuovo codice",
        "wrong_code": "Questo codice non è corretto. Tentativi rimasti: {n}.",
        "code_format": "Inserisca le 6 cifre del codice ricevuto via SMS.",
        "doc_title": "La Sua convocazione",
        "doc_intro": "La Sua convocazione è pronta. La conservi: potrebbe servire il giorno dell’appuntamento.",
        "download_pdf": "Scaricare la convocazione (PDF)",
        "download_ics": "Aggiungere al mio calendario (.ics)",
        "logout": "Disconnettersi",
        "help": "Ha domande o desidera cambiare la data o la modalità di invio? Chiami la segreteria al numero "
                "{phone}.",
        "help_email": "oppure scriva a {email}",
        "no_js": "Questa pagina richiede JavaScript per aprire il Suo documento.",
        "unknown.title": "Link non riconosciuto",
        "unknown.text": "Questo link non porta ad alcun messaggio. Verifichi di aver copiato tutto il link "
                        "dall’e-mail, oppure contatti la segreteria che Le ha inviato la convocazione.",
        "expired.title": "Questo messaggio è scaduto",
        "expired.text": "I messaggi vengono conservati fino a poco dopo l’appuntamento e poi eliminati. Contatti "
                        "la segreteria se ha bisogno di una copia della Sua convocazione.",
        "cancelled.title": "Questo appuntamento è stato annullato",
        "cancelled.text": "L’ospedale ha annullato questa convocazione. Per maggiori informazioni si rivolga alla "
                          "segreteria.",
        "withdrawn.title": "Questa convocazione è stata ritirata",
        "withdrawn.text": "La segreteria del servizio ha ritirato questa convocazione. Chiami la segreteria per "
                          "saperne di più.",
        "superseded.title": "Questo messaggio è stato sostituito",
        "superseded.text": "Le è stato inviato un messaggio più recente per questo appuntamento. Apra il link "
                           "dell’ultima e-mail ricevuta.",
        "code_expired.title": "Il Suo codice è scaduto",
        "code_expired.text": "Un codice è valido 10 minuti e può essere usato una sola volta. Richieda un nuovo "
                             "codice.",
        "wait.title": "La preghiamo di attendere prima di riprovare",
        "wait.text": "Per la Sua sicurezza, un nuovo codice potrà essere inviato o verificato solo a partire da "
                     "{until} (ora svizzera).",
        "sms_failed.title": "Non è stato possibile recapitare l’SMS",
        "sms_failed.text": "Non è stato possibile recapitare il codice al Suo telefono. Verifichi che sia acceso e "
                           "possa ricevere SMS, poi richieda un nuovo codice, oppure chiami la segreteria.",
        "link_incomplete.title": "Riapra il link della Sua e-mail",
        "link_incomplete.text": "Manca una parte del link, quindi il Suo documento non può essere aperto. Clicchi "
                                "di nuovo sul link nell’e-mail (oppure lo copi per intero nella barra degli "
                                "indirizzi).",
        "number_invalid.title": "Questo numero di cellulare non è valido",
        "number_invalid.text": "Inserisca il Suo numero di cellulare, ad esempio 079 123 45 67 o +41 79 123 45 67.",
        "session_expired.title": "La Sua sessione è terminata",
        "session_expired.text": "Per la Sua sicurezza, le sessioni terminano dopo 15 minuti di inattività. Riapra "
                                "il link della Sua e-mail e richieda un nuovo codice.",
        "bad_request.title": "Questo modulo è scaduto",
        "bad_request.text": "Torni al link della Sua e-mail e riprovi.",
        "not_my_number": "Questo non è il mio numero",
        "code_missing": "Nessun SMS dopo un minuto? I codici vengono inviati solo al numero che l’ospedale ha "
                        "registrato per Lei. Se il numero indicato non è il Suo, chiami la segreteria.",
        "not_my_number.title": "Questo non è il Suo numero?",
        "not_my_number.text": "Non richieda un codice: verrebbe inviato a questo numero. Chiami la segreteria al "
                              "{phone}; verificherà il numero registrato presso l’ospedale e può farLe avere la "
                              "Sua lettera in un altro modo.",
        "back": "Tornare al mio messaggio",
    },
}


def text(language: str, key: str, **values: object) -> str:
    catalogue = TEXTS.get(language) or TEXTS["fr"]
    template = catalogue.get(key) or TEXTS["fr"].get(key) or TEXTS["en"][key]
    return template.format(**values) if values else template
