"""Small per-language vocabularies and sentence templates for the built-in corpus.

Each language has four topics (sports, finance, tech, health) of subjects, verbs, objects and
measure phrases, plus names, places, organisations, dates and phone formats. Templates combine
them, so a few hundred words give hundreds of thousands of grammatical sentences: enough for a
BPE vocabulary of 8192 and for a small LM to learn word order and agreement.

Template slots: {S} subject, {V} verb, {O} object, {M} measure, {T} time, {D} date, {Y} year,
{L} place (LOC), {G} organisation (ORG), {P} person (PER, also PII), and the PII slots {E} e-mail,
{PH} phone, {IP} IPv4, {IP6} IPv6, {CARD} card number. Entries are `|`-separated to stay compact.
Subjects are singular so the verb forms agree in every language.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

TOPICS = ("sports", "finance", "tech", "health")


@dataclass(frozen=True)
class Topic:
    subjects: list[str]
    verbs: list[str]
    objects: list[str]
    measures: list[str]


@dataclass(frozen=True)
class Lexicon:
    lang: str
    joiner: str
    """Between sentences of a paragraph and the parts of a name: " ", or "" for Chinese."""
    first_names: list[tuple[str, str]]
    """(as written, Latin spelling for e-mail addresses)."""
    last_names: list[tuple[str, str]]
    places: list[str]
    orgs: list[str]
    times: list[str]
    months: list[str]
    date: str
    """Format with {d}, {m}, {month}, {y}."""
    phones: list[str]
    """Formats where each # is a random digit."""
    topics: dict[str, Topic]
    sentences: list[str]
    pii: list[str]
    cookie: str
    buttons: list[str]
    menu: list[str]
    footer: list[str]
    """Boilerplate lines; menus and buttons are joined with " | " like a scraped page."""


def _w(entries: str) -> list[str]:
    return entries.split("|")


def _names(entries: str) -> list[tuple[str, str]]:
    """"Müller" -> ("Müller", "muller"); "张:zhang" gives the Latin spelling explicitly."""
    pairs = []
    for entry in _w(entries):
        written, _, latin = entry.partition(":")
        folded = unicodedata.normalize("NFKD", latin or written).encode("ascii", "ignore").decode()
        pairs.append((written, folded.lower()))
    return pairs


def _topics(**specs: tuple[str, str, str, str]) -> dict[str, Topic]:
    return {name: Topic(*(_w(s) for s in spec)) for name, spec in specs.items()}


EN = Lexicon(
    lang="en",
    joiner=" ",
    first_names=_names("James|Mary|Robert|Linda|Michael|Sarah|David|Emily|Daniel|Olivia|Thomas|Grace"),
    last_names=_names("Smith|Johnson|Brown|Taylor|Wilson|Clarke|Walker|Wright|Hughes|Turner|Baker|Morgan"),
    places=_w("London|Manchester|New York|Chicago|Boston|Toronto|Sydney|Dublin|Seattle|Denver|Bristol|Leeds"),
    orgs=_w("Northwind Bank|Bluepeak Labs|Harbor Health|Summit Motors|Redline Media|Crestview Capital|"
            "Atlas Systems|Greenfield Clinic"),
    times=_w("yesterday|on Monday|last week|this morning|on Friday evening|earlier this year|last month|"
             "on Sunday"),
    months=_w("January|February|March|April|May|June|July|August|September|October|November|December"),
    date="{month} {d}, {y}",
    phones=_w("+1 (###) ###-####|+44 20 #### ####|+1-###-###-####|(###) ###-####"),
    topics=_topics(
        sports=("the home team|the young striker|the national squad|the veteran goalkeeper|the coach|"
                "the captain|the visiting club|the defending champion",
                "won|lost|reached|dominated|played|celebrated|missed|contested",
                "the final|the derby|the league title|the opening match|the semi-final|a penalty shootout|"
                "the away game|the cup",
                "by {N} points|after {N} minutes|in front of {N} fans|with {N} goals"),
        finance=("the central bank|the largest lender|the investor|the pension fund|the retail group|"
                 "the insurer|the main shareholder|the start-up",
                 "raised|cut|reported|doubled|sold|bought|reviewed|announced",
                 "interest rates|its annual profit|the quarterly forecast|a new bond|its stake|the dividend|"
                 "the loan portfolio|operating costs",
                 "by {N} percent|to {N} million dollars|for {N} billion dollars|within {N} days"),
        tech=("the software team|the chip maker|the research lab|the new app|the cloud provider|"
              "the engineer|the robot|the open source project",
              "released|tested|updated|designed|launched|improved|patched|shipped",
              "a faster processor|the mobile app|a security update|the search engine|a new battery|"
              "the database|the language model|the operating system",
              "with {N} cores|in {N} countries|for {N} users|after {N} months"),
        health=("the hospital|the doctor|the nurse|the health ministry|the research team|the clinic|"
                "the family doctor|the new vaccine",
                "treated|studied|reduced|tested|approved|prevented|examined|recommended",
                "the flu|a rare disease|blood pressure|the new therapy|heart problems|the risk of infection|"
                "sleep disorders|childhood asthma",
                "in {N} patients|by {N} percent|over {N} weeks|for {N} volunteers"),
    ),
    sentences=_w("{S} {V} {O} in {L} {T}.|{T}, {S} {V} {O} {M}.|According to {P}, {S} {V} {O}.|"
                 "{P} from {G} said that {S} {V} {O} {M}.|On {D}, {S} {V} {O} in {L}.|"
                 "{G} confirmed that {S} {V} {O}.|In {L}, {S} {V} {O} {M}, {P} wrote.|{S} {V} {O} {M} {T}."),
    pii=_w("For questions, contact {P} at {E} or call {PH}.|{P} can be reached at {PH}.|"
           "The login from {IP} was blocked by the firewall.|"
           "Traffic from {IP6} was routed through the backup server.|"
           "Please charge the card {CARD} for the invoice of {P}.|Send the signed form to {E} before {D}."),
    cookie="We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
    buttons=_w("Accept all cookies|Reject|Manage settings"),
    menu=_w("Home|News|Sports|Business|Technology|Health|Contact|Privacy Policy|Terms of Use|Imprint"),
    footer=_w("Subscribe to our newsletter|© {Y} {G}. All rights reserved.|Follow us on social media|"
              "Contact: {E}"),
)

DE = Lexicon(
    lang="de",
    joiner=" ",
    first_names=_names("Anna|Lukas|Sophie|Jonas|Lena|Felix|Marie|Paul|Hannah|Leon|Clara|Max"),
    last_names=_names("Müller|Schmidt|Schneider|Fischer|Weber|Meyer|Wagner|Becker|Hoffmann|Schäfer|Koch|"
                      "Richter"),
    places=_w("Berlin|Hamburg|München|Köln|Frankfurt|Stuttgart|Leipzig|Dresden|Bremen|Wien|Zürich|Hannover"),
    orgs=_w("Nordbank AG|Rheinwerk GmbH|Alpen Versicherung|Siemann Technik|Hansa Medien|Elbklinik|"
            "Bergmann Logistik|Südwest Energie"),
    times=_w("gestern|am Montag|letzte Woche|heute Morgen|am Freitagabend|Anfang des Jahres|"
             "im vergangenen Monat|am Sonntag"),
    months=_w("Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember"),
    date="{d}. {month} {y}",
    phones=_w("+49 30 ########|+49 (0)89 #######|030 ########|+43 1 #######"),
    topics=_topics(
        sports=("die Heimmannschaft|der junge Stürmer|die Nationalmannschaft|der erfahrene Torwart|"
                "der Trainer|der Kapitän|der Gastverein|der Titelverteidiger",
                "gewann|verlor|erreichte|dominierte|spielte|feierte|verpasste|bestritt",
                "das Finale|das Derby|den Meistertitel|das Eröffnungsspiel|das Halbfinale|"
                "ein Elfmeterschießen|"
                "das Auswärtsspiel|den Pokal",
                "mit {N} Punkten|nach {N} Minuten|vor {N} Zuschauern|mit {N} Toren"),
        finance=("die Zentralbank|der größte Kreditgeber|der Anleger|der Pensionsfonds|der Handelskonzern|"
                 "der Versicherer|der Großaktionär|das Start-up",
                 "erhöhte|senkte|meldete|verdoppelte|verkaufte|kaufte|prüfte|veröffentlichte",
                 "die Zinsen|den Jahresgewinn|die Quartalsprognose|eine neue Anleihe|seine Beteiligung|"
                 "die Dividende|das Kreditportfolio|die Betriebskosten",
                 "um {N} Prozent|auf {N} Millionen Euro|für {N} Milliarden Euro|innerhalb von {N} Tagen"),
        tech=("das Softwareteam|der Chiphersteller|das Forschungslabor|die neue App|der Cloud-Anbieter|"
              "die Ingenieurin|der Roboter|das Open-Source-Projekt",
              "veröffentlichte|testete|aktualisierte|entwarf|startete|verbesserte|lieferte|entwickelte",
              "einen schnelleren Prozessor|die mobile App|ein Sicherheitsupdate|die Suchmaschine|"
              "eine neue Batterie|die Datenbank|das Sprachmodell|das Betriebssystem",
              "mit {N} Kernen|in {N} Ländern|für {N} Nutzer|nach {N} Monaten"),
        health=("das Krankenhaus|die Ärztin|der Pfleger|das Gesundheitsministerium|das Forschungsteam|"
                "die Klinik|der Hausarzt|der neue Impfstoff",
                "behandelte|untersuchte|senkte|testete|genehmigte|verhinderte|erforschte|empfahl",
                "die Grippe|eine seltene Krankheit|den Blutdruck|die neue Therapie|Herzprobleme|"
                "das Infektionsrisiko|Schlafstörungen|Asthma bei Kindern",
                "bei {N} Patienten|um {N} Prozent|über {N} Wochen|mit {N} Freiwilligen"),
    ),
    sentences=_w("{S} {V} {T} {O} in {L}.|{T} {V} {S} {O} {M}.|Laut {P} {V} {S} {O}.|"
                 "{P} von {G} sagte, {S} {V} {O} {M}.|Am {D} {V} {S} in {L} {O}.|"
                 "{G} bestätigte, dass {S} {O} {V}.|In {L} {V} {S} {O} {M}, schrieb {P}.|{S} {V} {O} {M}."),
    pii=_w("Bei Fragen wenden Sie sich an {P} unter {E} oder {PH}.|{P} ist unter {PH} erreichbar.|"
           "Der Zugriff von {IP} wurde von der Firewall blockiert.|"
           "Der Verkehr von {IP6} lief über den Ersatzserver.|"
           "Bitte belasten Sie die Karte {CARD} für die Rechnung von {P}.|"
           "Senden Sie das Formular bis zum {D} an {E}."),
    cookie="Wir verwenden Cookies, um Ihr Erlebnis zu verbessern. Mit der Nutzung stimmen Sie unserer "
           "Cookie-Richtlinie zu.",
    buttons=_w("Alle akzeptieren|Ablehnen|Einstellungen"),
    menu=_w("Startseite|Nachrichten|Sport|Wirtschaft|Technik|Gesundheit|Kontakt|Datenschutz|"
            "Nutzungsbedingungen|Impressum"),
    footer=_w("Newsletter abonnieren|© {Y} {G}. Alle Rechte vorbehalten.|"
              "Folgen Sie uns in den sozialen Medien|"
              "Kontakt: {E}"),
)

FR = Lexicon(
    lang="fr",
    joiner=" ",
    first_names=_names("Camille|Louis|Chloé|Hugo|Léa|Gabriel|Manon|Arthur|Inès|Jules|Élise|Théo"),
    last_names=_names("Martin|Bernard|Dubois|Thomas|Robert|Richard|Petit|Durand|Leroy|Moreau|Lefèvre|Girard"),
    places=_w("Paris|Lyon|Marseille|Toulouse|Nice|Nantes|Bordeaux|Lille|Strasbourg|Montpellier|Rennes|"
              "Genève"),
    orgs=_w("Banque du Rhône|Lumière Technologies|Clinique Saint-Michel|Groupe Horizon|Éditions Mistral|"
            "Société Atlantique|Vallée Énergie|Crédit Alpin"),
    times=_w("hier|lundi|la semaine dernière|ce matin|vendredi soir|en début d'année|le mois dernier|"
             "dimanche"),
    months=_w("janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|décembre"),
    date="{d} {month} {y}",
    phones=_w("+33 1 ## ## ## ##|+33 6 ## ## ## ##|01 ## ## ## ##|+41 22 ### ## ##"),
    topics=_topics(
        sports=("l'équipe locale|le jeune attaquant|l'équipe nationale|le gardien expérimenté|l'entraîneur|"
                "le capitaine|le club visiteur|le champion en titre",
                "a remporté|a perdu|a atteint|a dominé|a joué|a célébré|a manqué|a disputé",
                "la finale|le derby|le titre de champion|le match d'ouverture|la demi-finale|"
                "une séance de tirs au but|le match à l'extérieur|la coupe",
                "avec {N} points d'avance|après {N} minutes|devant {N} spectateurs|avec {N} buts"),
        finance=("la banque centrale|le principal prêteur|l'investisseur|le fonds de pension|"
                 "le groupe de distribution|l'assureur|l'actionnaire principal|la jeune pousse",
                 "a relevé|a réduit|a publié|a doublé|a vendu|a acheté|a révisé|a annoncé",
                 "les taux d'intérêt|son bénéfice annuel|les prévisions trimestrielles|"
                 "une nouvelle obligation|"
                 "sa participation|le dividende|le portefeuille de prêts|les coûts d'exploitation",
                 "de {N} pour cent|à {N} millions d'euros|pour {N} milliards d'euros|en {N} jours"),
        tech=("l'équipe logicielle|le fabricant de puces|le laboratoire de recherche|la nouvelle application|"
              "le fournisseur de cloud|l'ingénieure|le robot|le projet open source",
              "a lancé|a testé|a mis à jour|a conçu|a présenté|a amélioré|a corrigé|a livré",
              "un processeur plus rapide|l'application mobile|une mise à jour de sécurité|"
              "le moteur de recherche|"
              "une nouvelle batterie|la base de données|le modèle de langage|le système d'exploitation",
              "avec {N} cœurs|dans {N} pays|pour {N} utilisateurs|après {N} mois"),
        health=("l'hôpital|la médecin|l'infirmier|le ministère de la Santé|l'équipe de recherche|la clinique|"
                "le médecin de famille|le nouveau vaccin",
                "a traité|a étudié|a réduit|a testé|a approuvé|a prévenu|a examiné|a recommandé",
                "la grippe|une maladie rare|la tension artérielle|la nouvelle thérapie|"
                "les problèmes cardiaques|"
                "le risque d'infection|les troubles du sommeil|l'asthme infantile",
                "chez {N} patients|de {N} pour cent|pendant {N} semaines|sur {N} volontaires"),
    ),
    sentences=_w("{S} {V} {O} à {L} {T}.|{T}, {S} {V} {O} {M}.|Selon {P}, {S} {V} {O}.|"
                 "{P}, de {G}, a déclaré que {S} {V} {O} {M}.|Le {D}, {S} {V} {O} à {L}.|"
                 "{G} a confirmé que {S} {V} {O}.|À {L}, {S} {V} {O} {M}, a écrit {P}.|{S} {V} {O} {M} {T}."),
    pii=_w("Pour toute question, contactez {P} à l'adresse {E} ou au {PH}.|{P} est joignable au {PH}.|"
           "La connexion depuis {IP} a été bloquée par le pare-feu.|"
           "Le trafic de {IP6} passe par le serveur de secours.|"
           "Veuillez débiter la carte {CARD} pour la facture de {P}.|"
           "Envoyez le formulaire signé à {E} avant le {D}."),
    cookie="Nous utilisons des cookies pour améliorer votre expérience. En poursuivant la navigation, "
           "vous acceptez notre politique de cookies.",
    buttons=_w("Tout accepter|Refuser|Paramètres"),
    menu=_w("Accueil|Actualités|Sport|Économie|Technologie|Santé|Contact|Politique de confidentialité|"
            "Conditions d'utilisation|Mentions légales"),
    footer=_w("Abonnez-vous à notre newsletter|© {Y} {G}. Tous droits réservés.|"
              "Suivez-nous sur les réseaux sociaux|Contact : {E}"),
)

ES = Lexicon(
    lang="es",
    joiner=" ",
    first_names=_names("Lucía|Mateo|Sofía|Hugo|Martina|Pablo|Valeria|Diego|Carmen|Javier|Elena|Andrés"),
    last_names=_names("García|Rodríguez|González|Fernández|López|Martínez|Sánchez|Pérez|Gómez|Ruiz|Díaz|"
                      "Moreno"),
    places=_w("Madrid|Barcelona|Valencia|Sevilla|Bilbao|Málaga|Zaragoza|Granada|Buenos Aires|"
              "Ciudad de México|Lima|Bogotá"),
    orgs=_w("Banco del Sur|Telecom Ibérica|Clínica San Rafael|Grupo Meridiano|Editorial Aurora|"
            "Energía Atlántica|Seguros Castilla|Innova Sistemas"),
    times=_w("ayer|el lunes|la semana pasada|esta mañana|el viernes por la noche|a principios de año|"
             "el mes pasado|el domingo"),
    months=_w("enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|diciembre"),
    date="{d} de {month} de {y}",
    phones=_w("+34 9## ### ###|+34 6## ## ## ##|+52 55 #### ####|+54 11 ####-####"),
    topics=_topics(
        sports=("el equipo local|el joven delantero|la selección nacional|el portero veterano|el entrenador|"
                "el capitán|el club visitante|el campeón defensor",
                "ganó|perdió|alcanzó|dominó|jugó|celebró|falló|disputó",
                "la final|el derbi|el título de liga|el partido inaugural|la semifinal|una tanda de penaltis|"
                "el partido fuera de casa|la copa",
                "por {N} puntos|tras {N} minutos|ante {N} aficionados|con {N} goles"),
        finance=("el banco central|el mayor prestamista|el inversor|el fondo de pensiones|el grupo minorista|"
                 "la aseguradora|el accionista principal|la empresa emergente",
                 "subió|recortó|publicó|duplicó|vendió|compró|revisó|anunció",
                 "los tipos de interés|su beneficio anual|la previsión trimestral|un nuevo bono|"
                 "su participación|el dividendo|la cartera de préstamos|los costes operativos",
                 "un {N} por ciento|hasta {N} millones de euros|por {N} mil millones de euros|en {N} días"),
        tech=("el equipo de software|el fabricante de chips|el laboratorio de investigación|"
              "la nueva aplicación|"
              "el proveedor de nube|la ingeniera|el robot|el proyecto de código abierto",
              "lanzó|probó|actualizó|diseñó|presentó|mejoró|corrigió|entregó",
              "un procesador más rápido|la aplicación móvil|una actualización de seguridad|"
              "el motor de búsqueda|"
              "una nueva batería|la base de datos|el modelo de lenguaje|el sistema operativo",
              "con {N} núcleos|en {N} países|para {N} usuarios|después de {N} meses"),
        health=("el hospital|la doctora|el enfermero|el ministerio de Sanidad|el equipo de investigación|"
                "la clínica|el médico de familia|la nueva vacuna",
                "trató|estudió|redujo|probó|aprobó|previno|examinó|recomendó",
                "la gripe|una enfermedad rara|la presión arterial|la nueva terapia|los problemas cardíacos|"
                "el riesgo de infección|los trastornos del sueño|el asma infantil",
                "en {N} pacientes|un {N} por ciento|durante {N} semanas|con {N} voluntarios"),
    ),
    sentences=_w("{S} {V} {O} en {L} {T}.|{T}, {S} {V} {O} {M}.|Según {P}, {S} {V} {O}.|"
                 "{P}, de {G}, dijo que {S} {V} {O} {M}.|El {D}, {S} {V} {O} en {L}.|"
                 "{G} confirmó que {S} {V} {O}.|En {L}, {S} {V} {O} {M}, escribió {P}.|{S} {V} {O} {M} {T}."),
    pii=_w("Para cualquier consulta, contacte con {P} en {E} o llame al {PH}.|"
           "{P} está disponible en el {PH}.|"
           "El acceso desde {IP} fue bloqueado por el cortafuegos.|"
           "El tráfico de {IP6} pasó por el servidor de respaldo.|"
           "Cargue la tarjeta {CARD} para la factura de {P}.|"
           "Envíe el formulario firmado a {E} antes del {D}."),
    cookie="Utilizamos cookies para mejorar su experiencia. Si continúa navegando, acepta nuestra "
           "política de cookies.",
    buttons=_w("Aceptar todas|Rechazar|Configuración"),
    menu=_w("Inicio|Noticias|Deportes|Economía|Tecnología|Salud|Contacto|Política de privacidad|"
            "Condiciones de uso|Aviso legal"),
    footer=_w("Suscríbase a nuestro boletín|© {Y} {G}. Todos los derechos reservados.|"
              "Síganos en las redes sociales|Contacto: {E}"),
)

ZH = Lexicon(
    lang="zh",
    joiner="",
    first_names=_names("伟:wei|芳:fang|娜:na|敏:min|静:jing|磊:lei|洋:yang|勇:yong|婷:ting|杰:jie|丽:li|强:qiang|"
                       "建国:jianguo|晓明:xiaoming|雪梅:xuemei|志强:zhiqiang"),
    last_names=_names("张:zhang|王:wang|李:li|刘:liu|陈:chen|杨:yang|赵:zhao|黄:huang|周:zhou|吴:wu|徐:xu|孙:sun"),
    places=_w("北京|上海|广州|深圳|杭州|成都|南京|武汉|西安|重庆|苏州|天津"),
    orgs=_w("华信银行|星云科技|东方医院|长江集团|新光传媒|天和保险|蓝海能源|中联通信"),
    times=_w("昨天|周一|上周|今天上午|周五晚上|今年年初|上个月|周日"),
    months=[],
    date="{y}年{m}月{d}日",
    phones=_w("+86 138 #### ####|+86 10 #### ####|139########|+86-21-########"),
    topics=_topics(
        sports=("主队|年轻前锋|国家队|老将门将|主教练|队长|客队|卫冕冠军",
                "赢得了|输掉了|打进了|主导了|参加了|庆祝了|错过了|完成了",
                "决赛|德比战|联赛冠军|揭幕战|半决赛|点球大战|客场比赛|杯赛",
                "以{N}分的优势|在第{N}分钟|在{N}名观众面前|凭借{N}个进球"),
        finance=("中央银行|最大的贷款机构|投资者|养老基金|零售集团|保险公司|大股东|初创公司",
                 "提高了|下调了|公布了|扩大了|出售了|收购了|审查了|宣布了",
                 "利率|年度利润|季度预测|新债券|股份|股息|贷款组合|运营成本",
                 "在{N}天内|以{N}亿元的价格|连续{N}个季度|以{N}%的幅度"),
        tech=("软件团队|芯片制造商|研究实验室|新应用|云服务商|工程师|机器人|开源项目",
              "发布了|测试了|更新了|设计了|推出了|改进了|修复了|交付了",
              "更快的处理器|手机应用|安全更新|搜索引擎|新电池|数据库|语言模型|操作系统",
              "在{N}个国家|为{N}名用户|用了{N}个月|在{N}台服务器上"),
        health=("医院|医生|护士|卫生部|研究团队|诊所|家庭医生|新疫苗",
                "治疗了|研究了|降低了|测试了|批准了|预防了|检查了|推荐了",
                "流感|一种罕见疾病|血压|新疗法|心脏问题|感染风险|睡眠障碍|儿童哮喘",
                "在{N}名患者中|在{N}周内|对{N}名志愿者|以{N}%的比例"),
    ),
    sentences=_w("{T}，{S}在{L}{V}{O}。|据{P}介绍，{S}{M}{V}{O}。|{G}的{P}表示，{S}{T}{V}{O}。|"
                 "{D}，{S}在{L}{V}{O}。|{G}证实，{S}已经{V}{O}。|在{L}，{S}{M}{V}{O}，{P}写道。|{T}，{S}{M}{V}{O}。"),
    pii=_w("如有疑问，请通过{E}或{PH}联系{P}。|{P}的电话是{PH}。|来自{IP}的登录已被防火墙拦截。|"
           "来自{IP6}的流量经过了备用服务器。|请从卡号{CARD}扣除{P}的账单。|请在{D}之前将签名表格发送至{E}。"),
    cookie="我们使用Cookie来改善您的体验。继续浏览即表示您同意我们的Cookie政策。",
    buttons=_w("全部接受|拒绝|设置"),
    menu=_w("首页|新闻|体育|财经|科技|健康|联系我们|隐私政策|使用条款|法律声明"),
    footer=_w("订阅我们的新闻简报|© {Y} {G}。保留所有权利。|关注我们的社交媒体|联系方式：{E}"),
)

LEXICONS = {lex.lang: lex for lex in (EN, DE, FR, ES, ZH)}
